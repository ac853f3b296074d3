"""Attribution methods: gradients, SmoothGrad, integrated gradients and its
completeness check, Grad-CAM inside fedclf's nested encoder/head models."""

import numpy as np
import pytest
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.interpret import attribution
from fedclf.models import build_classifier


@pytest.fixture(scope="module")
def cnn():
  return build_classifier("cnn", (8, 8, 1), 10)


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).standard_normal((3, 8, 8, 1)).astype(
      np.float32)


def linear_model(weights: np.ndarray) -> tf.keras.Model:
  inputs = tf.keras.Input((4, 4, 1))
  dense = tf.keras.layers.Dense(weights.shape[1], use_bias=True)
  logits = dense(tf.keras.layers.Flatten()(inputs))
  model = tf.keras.Model(inputs, logits)
  dense.set_weights([weights, np.arange(weights.shape[1], dtype=np.float32)])
  return model


def test_integrated_gradients_is_exact_on_a_linear_model():
  rng = np.random.default_rng(1)
  weights = rng.standard_normal((16, 3)).astype(np.float32)
  x = rng.standard_normal((2, 4, 4, 1)).astype(np.float32)
  baseline = np.full((4, 4, 1), 0.5, np.float32)
  ig = attribution.integrated_gradients(linear_model(weights), x, [2, 0],
                                        baseline, steps=1)
  expected = (x - baseline).reshape(2, -1) * weights[:, [2, 0]].T
  np.testing.assert_allclose(ig.attributions.reshape(2, -1), expected,
                             rtol=1e-5, atol=1e-6)
  assert ig.completeness(1e-5)["passed"]


def test_integrated_gradients_completeness_on_a_cnn(cnn, images):
  baseline = np.zeros((8, 8, 1), np.float32)
  ig = attribution.integrated_gradients(cnn, images, [0, 3, 7], baseline,
                                        steps=256, chunk=100)
  logits = cnn(np.concatenate([images, baseline[None]])).numpy()
  np.testing.assert_allclose(ig.output_differences,
                             logits[[0, 1, 2], [0, 3, 7]] - logits[3, [0, 3, 7]],
                             rtol=1e-4, atol=1e-5)
  report = ig.completeness(0.01)
  assert report["passed"], report["relative_errors"]
  assert report["max_relative_error"] == max(report["relative_errors"])
  # Too few steps: the check reports the gap rather than hiding it.
  coarse = attribution.integrated_gradients(cnn, images, [0, 3, 7], baseline,
                                            steps=1)
  assert coarse.relative_errors.max() > report["max_relative_error"]


def test_vanilla_gradients_of_a_linear_model_are_its_weights():
  weights = np.random.default_rng(2).standard_normal((16, 3)).astype(
      np.float32)
  x = np.zeros((2, 4, 4, 1), np.float32)
  grads = attribution.vanilla_gradients(linear_model(weights), x, [1, 2])
  np.testing.assert_allclose(grads.reshape(2, -1), weights[:, [1, 2]].T,
                             rtol=1e-6)


def test_smoothgrad_is_seeded_and_reduces_to_gradients(cnn, images):
  a = attribution.smoothgrad(cnn, images, [1, 2, 3], 4, 0.2, seed=5)
  b = attribution.smoothgrad(cnn, images, [1, 2, 3], 4, 0.2, seed=5)
  np.testing.assert_array_equal(a, b)
  noiseless = attribution.smoothgrad(cnn, images, [1, 2, 3], 2, 0.0, seed=0)
  np.testing.assert_allclose(
      noiseless, attribution.vanilla_gradients(cnn, images, [1, 2, 3]),
      rtol=1e-5, atol=1e-7)


def test_grad_cam_finds_the_last_conv_inside_the_encoder(cnn, images):
  assert attribution.conv_layer_names(cnn) == ["conv1", "conv2"]
  assert attribution.last_conv_layer_name(cnn) == "conv2"
  forward = attribution.tapped_forward(cnn, "conv2")
  activations, logits = forward(images)
  np.testing.assert_allclose(logits.numpy(), cnn(images).numpy(), rtol=1e-5,
                             atol=1e-6)
  encoder = cnn.get_layer("encoder")
  inner = tf.keras.Model(encoder.inputs, encoder.get_layer("conv2").output)
  np.testing.assert_allclose(activations.numpy(), inner(images).numpy(),
                             rtol=1e-5, atol=1e-6)
  maps = attribution.grad_cam(cnn, images, [0, 1, 2])
  assert maps.shape == (3, 8, 8) and (maps >= 0).all()
  first = attribution.grad_cam(cnn, images, [0, 1, 2], layer_name="conv1")
  assert not np.allclose(first, maps)


def test_grad_cam_matches_a_hand_computation_on_a_flat_model():
  inputs = tf.keras.Input((6, 6, 2))
  conv = tf.keras.layers.Conv2D(3, 3, padding="same", name="c",
                                kernel_initializer=tf.keras.initializers
                                .GlorotUniform(seed=1))(inputs)
  logits = tf.keras.layers.Dense(4, kernel_initializer=tf.keras.initializers
                                 .GlorotUniform(seed=2))(
                                     tf.keras.layers.Flatten()(conv))
  model = tf.keras.Model(inputs, logits)
  x = np.random.default_rng(3).standard_normal((2, 6, 6, 2)).astype(
      np.float32)
  tap = tf.keras.Model(inputs, [conv, logits])
  with tf.GradientTape() as tape:
    acts, out = tap(x)
    score = tf.reduce_sum(out[:, 1])
  grads = tape.gradient(score, acts).numpy()
  expected = np.maximum((grads.mean(axis=(1, 2), keepdims=True) *
                         acts.numpy()).sum(-1), 0)
  np.testing.assert_allclose(attribution.grad_cam(model, x, [1, 1]),
                             expected, rtol=1e-5, atol=1e-6)


def test_grad_cam_errors_are_user_errors(cnn):
  with pytest.raises(UserError, match="its convolutions: conv1, conv2"):
    attribution.tapped_forward(cnn, "conv9")
  mlp = build_classifier("mlp", (8, 8, 1), 10)
  with pytest.raises(UserError, match="needs a convolutional model"):
    attribution.last_conv_layer_name(mlp)


def test_heatmap_sums_channel_magnitudes():
  a = np.zeros((1, 2, 2, 3), np.float32)
  a[0, 0, 0] = [1.0, -2.0, 0.5]
  np.testing.assert_allclose(attribution.heatmap(a)[0, 0, 0], 3.5)
  maps = np.ones((2, 4, 4))
  assert attribution.heatmap(maps) is maps
