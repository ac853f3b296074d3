"""Tests of the per-round plan, batches, server optimizers and aggregation."""

import numpy as np
import pytest
import tensorflow as tf

from fedclf.federated import dp_epsilon
from fedclf.federated import rounds
from fedclf.federated import server_optimizers
from fedclf.federated.config import ServerOptimizerConfig
from fedclf.federated.aggregators import DpGaussian
from fedclf.federated.aggregators import weighted_mean


def test_plan_is_seeded_and_respects_sizes():
  a = rounds.plan_round(1, 5, 100, 10, 0.3, 0.2)
  b = rounds.plan_round(1, 5, 100, 10, 0.3, 0.2)
  c = rounds.plan_round(1, 6, 100, 10, 0.3, 0.2)
  np.testing.assert_array_equal(a.sampled, b.sampled)
  assert a.step_fraction == b.step_fraction
  assert not np.array_equal(a.sampled, c.sampled)
  assert len(np.unique(a.sampled)) == 10
  assert set(a.reporting) <= set(a.sampled)
  assert set(a.step_fraction) <= set(int(c) for c in a.reporting)


def test_client_batches_cover_each_example_once_per_epoch():
  idx = np.arange(10, 33)
  matrix, steps = rounds.client_batches(idx, 2, 5, np.random.default_rng(0),
                                        0, (12, 5))
  assert steps == 10  # 2 epochs x ceil(23 / 5)
  first_epoch = matrix[:5][matrix[:5] >= 0]
  np.testing.assert_array_equal(np.sort(first_epoch), idx)
  assert (matrix[10:] == -1).all()
  full, steps = rounds.client_batches(idx, 1, 0, np.random.default_rng(0), 0,
                                      (1, 23))
  assert steps == 1 and np.sort(full[0]).tolist() == idx.tolist()
  capped, steps = rounds.client_batches(idx, 2, 5, np.random.default_rng(0),
                                        3, (12, 5))
  assert steps == 3 and (capped[3:] == -1).all()


def _numpy_adam(w, g, lr, b1, b2, eps, steps):
  m = np.zeros_like(w)
  v = np.zeros_like(w)
  for t in range(1, steps + 1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    w = w - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
  return w


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "yogi",
                                  "adagrad"])
def test_server_optimizers_step(name):
  config = ServerOptimizerConfig(name=name, learning_rate=0.1, momentum=0.5,
                                 initial_accumulator=0.0).resolved()
  w = np.array([1.0, -2.0], np.float32)
  g = np.array([0.5, -1.0], np.float32)
  state = server_optimizers.initialize(config, [tf.constant(w)])
  w_tf = tf.constant(w)
  for _ in range(2):
    state, (w_tf,) = server_optimizers.apply(config, state, [w_tf],
                                             [tf.constant(g)])
  if name == "sgd":
    expected = w - 0.2 * g
  elif name == "momentum":
    expected = w - 0.1 * g - 0.1 * 1.5 * g
  elif name == "adam":
    expected = _numpy_adam(w, g, 0.1, 0.9, 0.99, 1e-3, 2)
  elif name == "adagrad":
    expected = w - 0.1 * g / np.sqrt(g * g + 1e-3) - 0.1 * g / np.sqrt(
        2 * g * g + 1e-3)
  else:  # yogi from a zero preconditioner equals adam's first steps' sign
    assert np.all(np.sign(w - w_tf.numpy()) == np.sign(g))
    return
  np.testing.assert_allclose(w_tf.numpy(), expected, rtol=1e-5)


def test_weighted_mean_and_dp_clipping():
  a = [tf.constant([1.0, 1.0])]
  b = [tf.constant([4.0, 4.0])]
  (mean,) = weighted_mean([a, b], [1.0, 3.0])
  np.testing.assert_allclose(mean.numpy(), [3.25, 3.25])
  (dp,) = DpGaussian(clip=1.0, noise_multiplier=0.0).combine(
      [[tf.constant([300.0, 400.0])]], [1.0], expected_clients=2,
      seed=(0, 1))
  np.testing.assert_allclose(dp.numpy(), [0.3, 0.4], rtol=1e-6)
  noisy = DpGaussian(clip=1.0, noise_multiplier=1.0)
  noisy_1 = noisy.combine([a], [1.0], 1, (0, 1))[0].numpy()
  noisy_2 = noisy.combine([a], [1.0], 1, (0, 1))[0].numpy()
  np.testing.assert_array_equal(noisy_1, noisy_2)  # seeded noise


def test_dp_epsilon_falls_with_more_noise():
  low = dp_epsilon(0.8, 0.1, 100, 1000)["epsilon"]
  high = dp_epsilon(2.0, 0.1, 100, 1000)["epsilon"]
  assert high < low
  assert dp_epsilon(0.0, 0.1, 10, 100)["epsilon"] == float("inf")


def test_divergence_names_the_newest_readable_checkpoint(tmp_path):
  # pylint: disable=g-import-not-at-top
  from fedclf.federated.round_loop import diverged
  checkpointer = rounds.Checkpointer(str(tmp_path), keep=3)
  for round_num in (1, 2):
    checkpointer.save(rounds.ServerState(
        trainable=[np.ones(3, np.float32)], non_trainable=[], optimizer=(),
        extra=[], round_num=round_num), {}, "tag")
  assert checkpointer.latest_readable().endswith("round_00002.npz")
  # A damaged newest file is what --resume skips, so it is not named.
  with open(tmp_path / "round_00002.npz", "r+b") as f:
    f.truncate(100)
  assert checkpointer.latest().endswith("round_00002.npz")
  message = str(diverged(checkpointer, 3, "loss nan", "lower the lr"))
  assert message.endswith("last good checkpoint: "
                          f"{tmp_path / 'round_00001.npz'}")
  with open(tmp_path / "round_00001.npz", "r+b") as f:
    f.truncate(100)
  assert checkpointer.latest_readable() is None
  assert "last good" not in str(diverged(checkpointer, 3, "x", "y"))
