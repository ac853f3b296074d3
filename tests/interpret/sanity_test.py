"""The cascading model-parameter randomization test and the similarity
measures it reports."""

import numpy as np
import pytest

from fedclf.interpret import attribution
from fedclf.interpret import sanity
from fedclf.interpret import similarity
from fedclf.models import build_classifier


def gradient_maps(model, x, c):
  return attribution.heatmap(attribution.vanilla_gradients(model, x, c))


def grad_cam_maps(model, x, c):
  return attribution.grad_cam(model, x, c)


@pytest.fixture(scope="module")
def trained_like():
  """A CNN whose weights are not at their initial values (randomization
  must move them back to the initializers' distribution)."""
  model = build_classifier("cnn", (8, 8, 1), 10)
  rng = np.random.default_rng(0)
  model.set_weights([w + 0.05 * rng.standard_normal(w.shape).astype(w.dtype)
                     for w in model.get_weights()])
  return model


def test_cascading_randomization(trained_like):
  x = np.random.default_rng(1).random((4, 8, 8, 1)).astype(np.float32)
  before = [w.copy() for w in trained_like.get_weights()]
  classes = trained_like(x).numpy().argmax(-1)
  result = sanity.cascading_randomization(
      trained_like, x, classes,
      {"gradient": gradient_maps, "grad_cam": grad_cam_maps}, seed=0,
      mask=x[..., 0] > 0.5)
  # Top layer first, every weighted layer once; the input model untouched.
  assert result.steps == ["logits", "fc", "conv2", "conv1"]
  for a, b in zip(before, trained_like.get_weights()):
    np.testing.assert_array_equal(a, b)
  gradient = result.similarity["gradient"]
  assert len(gradient) == 4
  assert gradient[-1]["spearman_abs"] < 0.5
  assert gradient[-1]["ssim"] < 0.5
  assert "spearman_abs_foreground" in gradient[-1]
  assert result.randomized_maps["grad_cam"][-1].shape == (4, 8, 8)
  report = result.report()
  assert report["methods"]["gradient"][0]["randomized_through"] == "logits"
  again = sanity.cascading_randomization(
      trained_like, x, classes, {"gradient": gradient_maps}, seed=0)
  np.testing.assert_array_equal(again.randomized_maps["gradient"][-1],
                                result.randomized_maps["gradient"][-1])


def test_reinitialize_draws_from_the_layers_initializers(trained_like):
  clone = sanity.copy_model(trained_like)
  dense = clone.get_layer("head").get_layer("logits")
  sanity.reinitialize(dense, np.random.default_rng(0))
  kernel, bias = dense.get_weights()
  original = trained_like.get_layer("head").get_layer("logits").get_weights()
  assert not np.allclose(kernel, original[0])
  np.testing.assert_array_equal(bias, np.zeros_like(bias))  # zeros init
  limit = np.sqrt(6.0 / sum(kernel.shape))  # Glorot uniform
  assert np.abs(kernel).max() <= limit


def test_similarity_measures():
  rng = np.random.default_rng(2)
  a = rng.random((3, 12, 12))
  same = similarity.map_similarity(a, a)
  assert same["spearman_abs"] == pytest.approx(1.0)
  assert same["ssim"] == pytest.approx(1.0, abs=1e-5)
  assert similarity.spearman(a, -a)[0] == pytest.approx(1.0)  # |map|
  reversed_ranks = a.max() - a
  assert similarity.spearman(a, reversed_ranks)[0] == pytest.approx(-1.0)
  flat = np.zeros((1, 12, 12))
  assert np.isnan(similarity.spearman(flat, a[:1])[0])
  report = similarity.map_similarity(np.concatenate([flat, a[:1]]),
                                 np.concatenate([a[:1], a[:1]]))
  assert report["undefined_spearman"] == 1
  assert report["spearman_abs"] == pytest.approx(1.0)
  # Small maps (8x8 digits) still get an SSIM.
  assert similarity.ssim(a[:, :8, :8], a[:, :8, :8]) == pytest.approx(
      [1.0] * 3, abs=1e-5)


def test_foreground_restricted_rank_correlation():
  a = np.zeros((1, 4, 4))
  b = np.zeros((1, 4, 4))
  a[0, :2, :2] = [[1, 2], [3, 4]]
  b[0, :2, :2] = [[4, 3], [2, 1]]
  mask = a > 0
  assert similarity.spearman(a, b, mask)[0] == pytest.approx(-1.0)
  # Over the whole map the shared zero background dominates.
  assert similarity.spearman(a, b)[0] > 0
  np.testing.assert_array_equal(similarity.foreground(
      np.stack([a[0], b[0]], -1)[None]), mask | (b > 0))
