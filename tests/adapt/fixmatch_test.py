"""FixMatch's masked pseudo-label loss against numpy, its views, and a
tiny centralized run (which never reads the target's training labels)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from fedclf.adapt import AdaptConfig
from fedclf.adapt import AdaptRunConfig
from fedclf.adapt import DomainLimits
from fedclf.adapt import FixMatchParams
from fedclf.adapt import run_adaptation
from fedclf.adapt.consistency import aligned
from fedclf.adapt.consistency import masked_pseudo_label_loss
from fedclf.adapt.consistency import standardized_views
from fedclf.adapt.consistency import strong_view
from fedclf.adapt.consistency import weak_view
from fedclf.adapt.consistency import zoom
from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.models import ModelConfig
from fedclf.train import OptimizerConfig
from fedclf.train import TrainConfig
from tests.adapt.resume_helpers import full_and_resumed

REAL_DATA = os.environ.get("FEDCLF_DATA_DIR", "")
needs_data = pytest.mark.skipif(
    not all(os.path.isdir(os.path.join(REAL_DATA, d))
            for d in ("mnist", "usps")),
    reason="FEDCLF_DATA_DIR with the real files is not set")


def test_masked_pseudo_label_loss_matches_numpy():
  weak = np.array([[4.0, 0.0, 0.0],    # confident: class 0
                   [0.0, 0.2, 0.1],    # not confident
                   [0.0, 0.0, 5.0]],   # confident: class 2
                  np.float32)
  strong = np.array([[1.0, 2.0, 0.0],
                     [3.0, 0.0, 0.0],
                     [0.5, 0.5, 0.5]], np.float32)
  threshold = 0.9
  probs = np.exp(weak) / np.exp(weak).sum(1, keepdims=True)
  mask = (probs.max(1) >= threshold).astype(np.float32)
  assert mask.tolist() == [1.0, 0.0, 1.0]
  log_q = strong - np.log(np.exp(strong).sum(1, keepdims=True))
  pseudo = probs.argmax(1)
  expected = (mask * -log_q[np.arange(3), pseudo]).sum() / 3
  loss, got_mask = masked_pseudo_label_loss(tf.constant(weak),
                                            tf.constant(strong), threshold)
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
  np.testing.assert_array_equal(got_mask.numpy(), mask)


def test_distribution_alignment_matches_numpy():
  # Weak-view probabilities [0.5, 0.5] and [0.9, 0.1]; the model has been
  # predicting class 0 four times as often as the (uniform) prior says.
  weak = np.log(np.array([[0.5, 0.5], [0.9, 0.1]], np.float32))
  prior, running_mean = np.array([0.5, 0.5]), np.array([0.8, 0.2])
  scaled = np.exp(weak) * prior / running_mean
  expected_probs = scaled / scaled.sum(1, keepdims=True)
  np.testing.assert_allclose(expected_probs, [[0.2, 0.8],
                                              [0.5625 / 0.8125,
                                               0.25 / 0.8125]], rtol=1e-5)
  np.testing.assert_allclose(
      aligned(tf.nn.softmax(weak), tf.constant(prior, tf.float32),
              tf.constant(running_mean, tf.float32)).numpy(),
      expected_probs, rtol=1e-5)
  strong = np.array([[0.0, 2.0], [1.0, 0.0]], np.float32)
  loss, mask = masked_pseudo_label_loss(
      tf.constant(weak), tf.constant(strong), 0.75,
      (tf.constant(prior, tf.float32), tf.constant(running_mean, tf.float32)))
  # Only the first image is confident after alignment (0.8), labelled 1.
  np.testing.assert_array_equal(mask.numpy(), [1.0, 0.0])
  log_q = strong[0] - np.log(np.exp(strong[0]).sum())
  np.testing.assert_allclose(loss.numpy(), -log_q[1] / 2, rtol=1e-5)


def test_loss_gradient_flows_through_the_strong_logits_only():
  weak = tf.Variable([[3.0, 0.0]])
  strong = tf.Variable([[0.0, 1.0]])
  with tf.GradientTape() as tape:
    loss, _ = masked_pseudo_label_loss(weak, strong, 0.5)
  grad_weak, grad_strong = tape.gradient(loss, [weak, strong])
  assert grad_weak is None or not np.any(grad_weak.numpy())
  # d CE(0, q) / d logits = softmax(q) - onehot(0).
  q = np.exp([0.0, 1.0]) / np.exp([0.0, 1.0]).sum()
  np.testing.assert_allclose(grad_strong.numpy()[0], q - [1.0, 0.0],
                             rtol=1e-5)


def test_nothing_confident_gives_zero_loss():
  loss, mask = masked_pseudo_label_loss(tf.zeros([4, 10]),
                                        tf.random.normal([4, 10]), 0.5)
  assert float(loss) == 0.0 and not mask.numpy().any()


def test_views_are_seeded_in_range_and_differ():
  images = tf.random.stateless_uniform([6, 16, 16, 1], [1, 2])
  seed = tf.constant([3, 4], tf.int64)
  weak = weak_view(images, seed)
  strong = strong_view(images, seed)
  np.testing.assert_array_equal(weak.numpy(), weak_view(images, seed).numpy())
  np.testing.assert_array_equal(strong.numpy(),
                                strong_view(images, seed).numpy())
  for view in (weak, strong):
    assert view.shape == images.shape
    assert 0.0 <= float(tf.reduce_min(view)) <= float(tf.reduce_max(view)) <= 1
  # The strong view moves the pixels further than the weak one.
  weak_change = float(tf.reduce_mean(tf.abs(weak - images)))
  strong_change = float(tf.reduce_mean(tf.abs(strong - images)))
  assert strong_change > weak_change > 0.0


def test_zoom_shrinks_about_the_centre():
  images = tf.ones([1, 8, 8, 1])
  half = zoom(images, tf.constant([0, 0], tf.int64), (0.5, 0.5))[0, ..., 0]
  expected = np.zeros([8, 8], np.float32)
  expected[2:6, 2:6] = 1.0  # pixels 2..5 sample inside the 8x8 input
  np.testing.assert_allclose(half.numpy(), expected, atol=1e-6)
  same = zoom(images, tf.constant([0, 0], tf.int64), (1.0, 1.0))
  np.testing.assert_allclose(same.numpy(), images.numpy(), atol=1e-6)


def test_standardized_views_round_trip_the_normalization():
  norm = Normalization((0.25,), (0.5,))
  pixels = np.zeros([2, 8, 8, 1], np.float32)
  weak, strong = standardized_views(tf.constant(norm.apply(pixels)),
                                    tf.constant([0, 1], tf.int64), norm,
                                    strong=False)
  assert strong is None
  # Black images stay black after a shift: still -mean / std everywhere.
  np.testing.assert_allclose(weak.numpy(), -0.5, atol=1e-6)


@pytest.mark.parametrize("params, message", [
    (FixMatchParams(fixmatch_threshold=1.5), "fixmatch_threshold"),
    (FixMatchParams(fixmatch_ratio=0), "fixmatch_ratio"),
    (FixMatchParams(fixmatch_weight=-1.0), "fixmatch_weight"),
    (FixMatchParams(fixmatch_warmup_epochs=-1), "fixmatch_warmup_epochs"),
])
def test_params_refused(params, message):
  with pytest.raises(UserError, match=message):
    params.validate()


def tiny_config(epochs=2, **params):
  return AdaptRunConfig(
      source="mnist", target="usps", method="fixmatch", model_name="mlp",
      model=ModelConfig(width_multiplier=0.5),
      limits=DomainLimits(train=256, test=200),
      adapt=AdaptConfig(
          train=TrainConfig(epochs=epochs, batch_size=32,
                            optimizer=OptimizerConfig("momentum", 0.05)),
          params=FixMatchParams(fixmatch_threshold=0.5, fixmatch_ratio=2,
                                **params)))


@needs_data
def test_tiny_run(tmp_path):
  summary = run_adaptation(tiny_config(fixmatch_warmup_epochs=1),
                           str(tmp_path), {"method": "fixmatch"})
  assert summary["method"] == "fixmatch"
  assert summary["target_accuracy"] > 0.15
  assert summary["model_selection"].startswith("last epoch")
  rows = [json.loads(line) for line in
          (tmp_path / "metrics.jsonl").read_text().splitlines()]
  epochs = [r for r in rows if "unlabelled_weight" in r]
  # The warm-up epoch trains on the source alone; the second adds L_u.
  assert [r["unlabelled_weight"] for r in epochs] == [0.0, 1.0]
  assert 0.0 < epochs[-1]["confident_fraction"] <= 1.0
  assert summary["fixmatch"]["fixmatch_align"]


@needs_data
def test_resume_replays_the_uninterrupted_run(tmp_path):
  """The checkpoint holds the alignment's running mean too."""
  full, resumed = full_and_resumed(tiny_config(epochs=2), tmp_path,
                                   "fixmatch")
  assert resumed["epochs_run"] == 2
  assert resumed["target_accuracy"] == pytest.approx(full["target_accuracy"])
  assert resumed["final_confident_fraction"] == pytest.approx(
      full["final_confident_fraction"], rel=1e-4)


@needs_data
def test_target_training_labels_are_never_read(tmp_path, monkeypatch):
  """Scrambling the target's training labels changes nothing."""
  from fedclf.adapt import centralized_run  # pylint: disable=g-import-not-at-top

  first = run_adaptation(tiny_config(epochs=1), str(tmp_path / "a"), {})
  load_pair = centralized_run.AdaptRunConfig.load_pair

  def scrambled(self):
    pair = load_pair(self)
    pair.target.y_train[:] = (pair.target.y_train + 3) % 10
    return pair

  monkeypatch.setattr(centralized_run.AdaptRunConfig, "load_pair", scrambled)
  second = run_adaptation(tiny_config(epochs=1), str(tmp_path / "b"), {})
  assert first["target_accuracy"] == second["target_accuracy"]
