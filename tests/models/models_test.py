"""Tests of the model zoo: shapes, encoder/head split, norms, seeds, errors."""

from __future__ import annotations

import functools
import random

import numpy as np
import pytest
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.models import build_classifier
from fedclf.models import build_model_parts
from fedclf.models import count_params
from fedclf.models import ModelConfig
from fedclf.models import ModelParts
from fedclf.models import building_blocks
from fedclf.models.building_blocks import group_count
from fedclf.registry import MODELS
from fedclf.registry import UnknownNameError

ALL_MODELS = ("mlp", "cnn", "cnn_gap", "lenet5", "niid_bench_cnn", "alexnet",
              "resnet18", "resnet20", "efficientnet_b0")
# Cheap enough to build at every shape; resnet18 and efficientnet_b0 (several
# seconds per build on 2 cores) are built at fewer.
SMALL_MODELS = ("mlp", "cnn", "cnn_gap", "lenet5", "niid_bench_cnn", "alexnet",
                "resnet20")
# sklearn digits, USPS, MNIST, CIFAR, a larger image, and an odd corner case.
SHAPES = ((8, 8, 1), (16, 16, 1), (28, 28, 1), (32, 32, 3), (64, 64, 3),
          (5, 7, 2))
SHAPE_CASES = (
    [(name, shape, classes)
     for name in SMALL_MODELS
     for shape, classes in zip(SHAPES, (10, 3, 10, 100, 2, 4))] +
    [("resnet18", (8, 8, 1), 10), ("resnet18", (32, 32, 3), 10)])
# efficientnet_b0 is built at (8, 8, 1) only (resized and tiled to 32x32x3
# inside its encoder), by the tests that share `_classifier`.
BATCH = 2


@functools.lru_cache(maxsize=None)
def _classifier(name: str, shape: tuple[int, int, int], num_classes: int,
                config: ModelConfig = ModelConfig()) -> tf.keras.Model:
  """Builds once per argument set; tests below only read the models."""
  return build_classifier(name, shape, num_classes, config)


def _images(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return rng.normal(size=(BATCH,) + shape).astype(np.float32)


def _all_layers(model: tf.keras.Model):
  """Every layer, descending into nested models (encoder, head, backbone)."""
  for layer in model.layers:
    yield layer
    if isinstance(layer, tf.keras.Model):
      yield from _all_layers(layer)


def _layer_types(model: tf.keras.Model) -> set[type]:
  return {type(layer) for layer in _all_layers(model)}


def test_all_models_registered():
  assert set(ALL_MODELS) <= set(MODELS.names())


@pytest.mark.parametrize("name,shape,num_classes", SHAPE_CASES)
def test_parts_shapes(name, shape, num_classes):
  parts = build_model_parts(name, shape, num_classes)
  assert isinstance(parts, ModelParts)
  assert parts.encoder.name == "encoder" and parts.head.name == "head"
  features = parts.encoder(_images(shape), training=False)
  assert features.shape == (BATCH, parts.feature_dim)
  assert features.dtype == tf.float32
  logits = parts.head(features, training=False)
  assert logits.shape == (BATCH, num_classes)
  assert np.all(np.isfinite(logits.numpy()))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_classifier_is_head_of_encoder(name):
  shape = (8, 8, 1) if name == "efficientnet_b0" else (16, 16, 1)
  model = _classifier(name, shape, 3)
  assert model.output_shape == (None, 3)
  encoder, head = model.get_layer("encoder"), model.get_layer("head")
  assert encoder.output_shape == head.input_shape
  assert len(encoder.output_shape) == 2 and encoder.output_shape[1] > 0
  x = _images(shape, seed=1)
  logits = model(x, training=False)
  assert logits.shape == (BATCH, 3)
  np.testing.assert_allclose(
      logits, head(encoder(x, training=False), training=False),
      rtol=1e-5, atol=1e-6)
  # Logits, not probabilities: nothing forces rows to sum to one.
  assert not np.allclose(np.sum(logits, axis=-1), 1.0)


@pytest.mark.parametrize("name", ["alexnet", "resnet18", "resnet20",
                                  "efficientnet_b0"])
def test_group_norm_replaces_batch_norm(name):
  shape = (8, 8, 1)
  batch_types = _layer_types(_classifier(name, shape, 3))
  assert tf.keras.layers.BatchNormalization in batch_types
  group = _classifier(name, shape, 3, ModelConfig(norm="group"))
  group_types = _layer_types(group)
  assert tf.keras.layers.GroupNormalization in group_types
  assert tf.keras.layers.BatchNormalization not in group_types
  if name in ("alexnet", "resnet20"):  # The rest are slow to run.
    out = group(_images(shape), training=True)
    assert out.shape == (BATCH, 3)
    assert np.all(np.isfinite(out.numpy()))


@pytest.mark.parametrize("name", ["alexnet", "resnet20"])
def test_no_norm_has_no_norm_layers(name):
  types = _layer_types(build_classifier(name, (8, 8, 1), 3,
                                        ModelConfig(norm="none")))
  assert tf.keras.layers.BatchNormalization not in types
  assert tf.keras.layers.GroupNormalization not in types


def test_group_count_divides_and_keeps_two_channels_per_group():
  assert [group_count(c) for c in (1, 6, 16, 24, 64, 512, 1280)] == [
      1, 3, 8, 12, 32, 32, 32]
  for channels in range(1, 300):
    groups = group_count(channels)
    assert channels % groups == 0 and groups <= 32
    assert channels == 1 or channels // groups >= 2


@pytest.mark.parametrize(
    "name", [n for n in ALL_MODELS if n != "efficientnet_b0"])
def test_seed_determines_initial_weights(name):
  shape = (8, 8, 1)
  reference = _classifier(name, shape, 3).get_weights()
  same = build_classifier(name, shape, 3, ModelConfig(seed=0)).get_weights()
  other = build_classifier(name, shape, 3, ModelConfig(seed=1)).get_weights()
  assert len(reference) == len(same) == len(other)
  for a, b in zip(reference, same):
    np.testing.assert_array_equal(a, b)
  # Every randomly initialised kernel changes with the seed (biases and norm
  # parameters start constant).
  changed = [not np.array_equal(a, b) for a, b in zip(reference, other)]
  varied = [np.std(a) > 0 for a in reference]
  assert any(changed)
  assert changed == varied


def test_efficientnet_seed_determines_initial_weights():
  # Shares builds with the tests above: efficientnet_b0 takes seconds each.
  # BatchNorm -> GroupNorm swaps consume no seeds, so with the same seed the
  # kernels of the norm="group" build equal those of the default build.
  def kernels(config):
    model = _classifier("efficientnet_b0", (8, 8, 1), 3, config)
    return {w.name: w.numpy() for w in model.weights if "kernel" in w.name}

  reference = kernels(ModelConfig())
  same = kernels(ModelConfig(norm="group"))
  other = kernels(ModelConfig(seed=1))
  assert len(reference) > 50 and reference.keys() == same.keys()
  for name, value in reference.items():
    np.testing.assert_array_equal(value, same[name], err_msg=name)
    assert not np.array_equal(value, other[name]), name


def test_build_leaves_global_random_state_alone():
  np.random.seed(123)
  random.seed(123)
  build_model_parts("cnn", (8, 8, 1), 3, ModelConfig(seed=7))
  assert np.random.randint(1 << 30) == np.random.RandomState(123).randint(
      1 << 30)
  assert random.random() == random.Random(123).random()


def test_count_params_matches_papers():
  # McMahan et al. 2017: the 2NN and the CNN on MNIST.
  mlp = _classifier("mlp", (28, 28, 1), 10)
  assert count_params(mlp) == (784 * 200 + 200 + 200 * 200 + 200 +
                               200 * 10 + 10) == 199_210
  assert count_params(_classifier("cnn", (28, 28, 1), 10)) == 1_663_370
  # The classic LeNet-5 count on (padded) MNIST.
  assert count_params(_classifier("lenet5", (28, 28, 1), 10)) == 61_706
  # NIID-Bench's unpadded variant: 4x4x16 = 256 features into Dense(120).
  assert count_params(_classifier("niid_bench_cnn", (28, 28, 1), 10)) == (
      6 * 25 + 6 + 16 * 6 * 25 + 16 + 256 * 120 + 120 + 120 * 84 + 84 +
      84 * 10 + 10) == 44_426


def test_cnn_gap_reads_pooled_channels():
  # 3x3 convs without bias (BatchNorm follows), 4 BN statistics per channel,
  # a Dense head on the 256 pooled channels.
  convs = 9 * (1 * 32 + 32 * 64 + 64 * 128 + 128 * 256)
  norms = 4 * (32 + 64 + 128 + 256)
  model = _classifier("cnn_gap", (28, 28, 1), 10)
  assert count_params(model) == convs + norms + 256 * 10 + 10 == 391_850
  parts = build_model_parts("cnn_gap", (28, 28, 1), 10)
  assert parts.feature_dim == 256
  assert isinstance(parts.encoder.layers[-1],
                    tf.keras.layers.GlobalAveragePooling2D)


def test_count_params_trainable_only_skips_moving_statistics():
  model = _classifier("resnet20", (8, 8, 1), 3)
  moving = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
  assert moving > 0
  assert count_params(model) == count_params(model,
                                             trainable_only=True) + moving
  assert count_params(model) == model.count_params()


def test_width_multiplier_scales_hidden_layers():
  parts = build_model_parts("mlp", (28, 28, 1), 10,
                            ModelConfig(width_multiplier=0.5))
  assert parts.feature_dim == 100
  parts = build_model_parts("resnet20", (8, 8, 1), 10,
                            ModelConfig(width_multiplier=2.0))
  assert parts.feature_dim == 128


def test_dropout_goes_before_the_head():
  parts = build_model_parts("cnn", (8, 8, 1), 3, ModelConfig(dropout=0.5))
  assert tf.keras.layers.Dropout in _layer_types(parts.head)
  no_dropout = build_model_parts("cnn", (8, 8, 1), 3)
  assert tf.keras.layers.Dropout not in _layer_types(no_dropout.head)
  # AlexNet has its dropout in the dense layers, like the original.
  alexnet = build_model_parts("alexnet", (8, 8, 1), 3,
                              ModelConfig(dropout=0.5))
  assert tf.keras.layers.Dropout in _layer_types(alexnet.encoder)
  assert tf.keras.layers.Dropout not in _layer_types(alexnet.head)


def test_unknown_name_lists_names():
  with pytest.raises(UnknownNameError) as error:
    build_model_parts("vgg16", (28, 28, 1), 10)
  for name in ALL_MODELS:
    assert name in str(error.value)


@pytest.mark.parametrize("shape", [
    (28, 28), (28, 28, 1, 1), (0, 28, 1), (28, -1, 1), (28.0, 28, 1),
    (True, 28, 1), None, "28x28x1"
])
def test_bad_input_shape_raises_user_error(shape):
  with pytest.raises(UserError, match="input shape"):
    build_model_parts("mlp", shape, 10)


@pytest.mark.parametrize("num_classes", [1, 0, -3, 2.0, True, None])
def test_bad_num_classes_raises_user_error(num_classes):
  with pytest.raises(UserError, match="classes"):
    build_model_parts("mlp", (28, 28, 1), num_classes)


def test_shape_given_as_list_is_accepted():
  parts = build_model_parts("mlp", [8, 8, 1], 2)
  assert parts.encoder.input_shape == (None, 8, 8, 1)


# lenet5's fan-ins on 28x28x1 inputs, by layer, counted by hand.
LENET5_FAN_INS = {"conv1": 5 * 5 * 1, "conv2": 5 * 5 * 6, "fc1": 5 * 5 * 16,
                  "fc2": 120, "logits": 84}


def test_pytorch_weight_init_draws_uniform_within_one_over_sqrt_fan_in():
  model = build_classifier("lenet5", (28, 28, 1), 10,
                           ModelConfig(weight_init="pytorch"))
  seen = set()
  for weight in model.weights:
    layer, kind = weight.name.split("/")[0], weight.name.split("/")[1]
    bound = 1.0 / np.sqrt(LENET5_FAN_INS[layer])
    values = weight.numpy()
    assert np.abs(values).max() <= bound, weight.name
    if values.size >= 1000:
      # Uniform(-b, b): standard deviation b / sqrt(3), mean 0.
      assert np.std(values) == pytest.approx(bound / np.sqrt(3), rel=0.05)
      assert abs(np.mean(values)) < 0.05 * bound
    # Biases are drawn too (Keras starts them at 0).
    assert np.std(values) > 0, weight.name
    seen.add((layer, kind.split(":")[0]))
  assert seen == {(layer, kind) for layer in LENET5_FAN_INS
                  for kind in ("kernel", "bias")}


def test_pytorch_weight_init_is_seeded():
  def weights(seed):
    config = ModelConfig(weight_init="pytorch", seed=seed)
    return build_classifier("niid_bench_cnn", (28, 28, 1), 10,
                            config).get_weights()
  for a, b, c in zip(weights(0), weights(0), weights(1)):
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_pytorch_weight_init_depthwise_fan_in_is_one_channel():
  # PyTorch's depthwise convolution (groups = channels) sees one input
  # channel per output: fan_in is the kernel area, not area x channels.
  inputs = tf.keras.Input((6, 6, 4))
  x = tf.keras.layers.DepthwiseConv2D(3, name="depthwise")(inputs)
  x = tf.keras.layers.Conv2D(8, 1, name="pointwise")(x)
  x = tf.keras.layers.GlobalAveragePooling2D()(x)
  encoder = tf.keras.Model(inputs, x)
  features = tf.keras.Input((8,))
  head = tf.keras.Model(features, tf.keras.layers.Dense(3)(features))
  parts = ModelParts(encoder=encoder, head=head, feature_dim=8)
  building_blocks.pytorch_default_init(parts, seed=0)
  depthwise = encoder.get_layer("depthwise")
  assert np.abs(depthwise.depthwise_kernel.numpy()).max() <= 1 / 3
  assert np.abs(depthwise.depthwise_kernel.numpy()).max() > 1 / np.sqrt(36)
  pointwise = encoder.get_layer("pointwise").kernel.numpy()
  assert np.abs(pointwise).max() <= 1 / 2  # fan_in 1 x 1 x 4


def _parts_with(layer: tf.keras.layers.Layer, input_shape) -> ModelParts:
  inputs = tf.keras.Input(input_shape)
  x = tf.keras.layers.Flatten()(layer(inputs))
  encoder = tf.keras.Model(inputs, x)
  dim = int(x.shape[-1])
  features = tf.keras.Input((dim,))
  head = tf.keras.Model(features, tf.keras.layers.Dense(2)(features))
  return ModelParts(encoder=encoder, head=head, feature_dim=dim)


def test_pytorch_weight_init_separable_conv_is_depthwise_then_pointwise():
  # PyTorch writes a separable convolution as a depthwise 3x3 (fan_in 9)
  # and a pointwise 1x1 over 4 x 2 depthwise outputs (fan_in 8) that
  # carries the bias.
  layer = tf.keras.layers.SeparableConv2D(16, 3, depth_multiplier=2,
                                          name="separable")
  building_blocks.pytorch_default_init(_parts_with(layer, (8, 8, 4)), seed=0)
  for weight, bound in ((layer.depthwise_kernel, 1 / 3),
                        (layer.pointwise_kernel, 1 / np.sqrt(8)),
                        (layer.bias, 1 / np.sqrt(8))):
    values = np.abs(weight.numpy())
    assert values.max() <= bound, weight.name
    # Near the bound: drawn with this fan-in, not a smaller one.
    assert values.max() > 0.8 * bound, weight.name


def test_pytorch_weight_init_refuses_layers_it_has_no_rule_for():
  # Leaving an attention layer at Keras' values would mix two schemes.
  class Attend(tf.keras.layers.Layer):

    def __init__(self):
      super().__init__(name="attend")
      self.attention = tf.keras.layers.MultiHeadAttention(1, 4)

    def call(self, x):
      return self.attention(x, x)

  with pytest.raises(UserError, match="attend.*no PyTorch rule"):
    building_blocks.pytorch_default_init(_parts_with(Attend(), (3, 4)),
                                         seed=0)


def test_pytorch_weight_init_refuses_extra_weights_of_a_known_layer():
  # A Dense subclass with a learned gain: redrawing kernel and bias only
  # would leave the gain at its Keras value.
  class GainDense(tf.keras.layers.Dense):

    def build(self, input_shape):
      super().build(input_shape)
      self.gain = self.add_weight(name="gain", shape=(self.units,),
                                  initializer="ones")

    def call(self, x):
      return super().call(x) * self.gain

  with pytest.raises(UserError, match="gained.*no PyTorch rule.*gain"):
    building_blocks.pytorch_default_init(
        _parts_with(GainDense(3, name="gained"), (4,)), seed=0)


@pytest.mark.parametrize("kwargs,match", [
    ({"weight_init": "xavier"}, "weight_init"),
    ({"norm": "layer"}, "norm"),
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
    ({"width_multiplier": 0.0}, "width_multiplier"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
])
def test_bad_config_raises_user_error(kwargs, match):
  with pytest.raises(UserError, match=match):
    ModelConfig(**kwargs)


def test_efficientnet_rejects_width_multiplier():
  with pytest.raises(UserError, match="width_multiplier"):
    build_model_parts("efficientnet_b0", (32, 32, 3), 10,
                      ModelConfig(width_multiplier=0.5))


def test_efficientnet_has_no_input_rescaling():
  # Keras' Rescaling(1/255) and Normalization are stripped, so normalised
  # inputs reach the stem unchanged and every weight is float.
  model = _classifier("efficientnet_b0", (8, 8, 1), 3)
  types = _layer_types(model)
  assert tf.keras.layers.Rescaling not in types
  assert tf.keras.layers.Normalization not in types
  assert all(w.dtype == tf.float32 for w in model.weights)
