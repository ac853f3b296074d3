"""The model zoo: shapes, encoder/head split, norms, seeds, errors."""

import numpy as np
import pytest
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.models import build_classifier
from fedclf.models import build_model_parts
from fedclf.models import count_params
from fedclf.models import ModelConfig
from fedclf.registry import MODELS
from fedclf.registry import UnknownNameError

SHAPES = [(8, 8, 1), (16, 16, 1), (28, 28, 1), (32, 32, 3)]
FAST = ["mlp", "cnn", "lenet5", "alexnet", "resnet20"]


def test_zoo_has_all_models():
  assert set(MODELS.names()) >= {"mlp", "cnn", "lenet5", "alexnet", "resnet18",
                                 "resnet20", "efficientnet_b0"}


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("shape", SHAPES)
def test_output_shapes_and_split(name, shape):
  parts = build_model_parts(name, shape, 7)
  x = np.random.default_rng(0).normal(size=(2,) + shape).astype(np.float32)
  features = parts.encoder(x, training=False)
  assert features.shape == (2, parts.feature_dim)
  model = build_classifier(name, shape, 7)
  assert model.output_shape == (None, 7)
  assert model(x, training=False).shape == (2, 7)
  assert {l.name for l in model.layers} >= {"encoder", "head"}


@pytest.mark.parametrize("name,shape", [("resnet18", (32, 32, 3)),
                                        ("efficientnet_b0", (16, 16, 1))])
def test_large_models(name, shape):
  model = build_classifier(name, shape, 10)
  x = np.zeros((2,) + shape, np.float32)
  assert model(x, training=False).shape == (2, 10)


def test_classifier_equals_head_of_encoder():
  parts = build_model_parts("cnn", (28, 28, 1), 10)
  model = tf.keras.Model(parts.encoder.input,
                         parts.head(parts.encoder.output))
  x = np.random.default_rng(1).normal(size=(3, 28, 28, 1)).astype(np.float32)
  np.testing.assert_allclose(model(x), parts.head(parts.encoder(x)),
                             rtol=1e-6)


@pytest.mark.parametrize("name", ["resnet20", "alexnet", "efficientnet_b0"])
def test_group_norm_replaces_batch_norm(name):
  model = build_classifier(name, (32, 32, 3), 10, ModelConfig(norm="group"))

  def layers(m):
    for layer in m.layers:
      yield layer
      if isinstance(layer, tf.keras.Model):
        yield from layers(layer)

  kinds = {type(l).__name__ for l in layers(model)}
  assert "GroupNormalization" in kinds
  assert "BatchNormalization" not in kinds


def test_seeded_initialization():
  weights = lambda seed: build_classifier(
      "cnn", (28, 28, 1), 10, ModelConfig(seed=seed)).get_weights()
  for a, b in zip(weights(3), weights(3)):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(weights(3)[0], weights(4)[0])


def test_mlp_parameter_count_matches_mcmahan_2nn():
  model = build_classifier("mlp", (28, 28, 1), 10)
  assert count_params(model) == 784 * 200 + 200 + 200 * 200 + 200 + 2010


def test_cnn_parameter_count_matches_mcmahan():
  # 1,663,370 parameters for the MNIST CNN (McMahan et al. 2017).
  assert count_params(build_classifier("cnn", (28, 28, 1), 10)) == 1663370


def test_errors():
  with pytest.raises(UnknownNameError, match="choose one of: alexnet, cnn"):
    build_classifier("vgg", (28, 28, 1), 10)
  with pytest.raises(UserError, match="input shape"):
    build_classifier("cnn", (28, 28), 10)
  with pytest.raises(UserError, match="classes"):
    build_classifier("cnn", (28, 28, 1), 1)
  with pytest.raises(UserError, match="norm"):
    build_classifier("cnn", (28, 28, 1), 10, ModelConfig(norm="layer"))
