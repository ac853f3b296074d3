"""LARS against hand-computed steps (You et al. 2017; SimCLR's variant)."""

import numpy as np
import tensorflow as tf

from fedclf.train.lars import Lars
from fedclf.train.optimizers import build_optimizer
from fedclf.train.optimizers import OptimizerConfig


def _step(optimizer, variables, grads):
  optimizer.apply_gradients(
      zip([tf.constant(g, tf.float32) for g in grads], variables))


def test_two_steps_match_the_hand_computed_update():
  kernel = tf.Variable([[3.0, 4.0]])  # ||w|| = 5
  bias = tf.Variable([1.0, -1.0])
  g_kernel = [[0.6, 0.8]]  # ||g|| = 1
  g_bias = [0.5, 0.5]
  opt = Lars(1.0, momentum=0.9, weight_decay=0.0, eta=0.001)
  _step(opt, [kernel, bias], [g_kernel, g_bias])
  # trust = 0.001 * 5 / 1; v = 0.005 * g; the bias takes lr * g.
  v1 = 0.005 * np.array([[0.6, 0.8]])
  np.testing.assert_allclose(kernel.numpy(), [[3.0, 4.0]] - v1, rtol=1e-6)
  np.testing.assert_allclose(bias.numpy(), [0.5, -1.5], rtol=1e-6)
  _step(opt, [kernel, bias], [g_kernel, g_bias])
  # ||w|| is now 5 - 0.005 = 4.995, so trust = 0.004995.
  v2 = 0.9 * v1 + 0.004995 * np.array([[0.6, 0.8]])
  np.testing.assert_allclose(kernel.numpy(), [[3.0, 4.0]] - v1 - v2,
                             rtol=1e-6)
  np.testing.assert_allclose(bias.numpy(),
                             [0.5 - 0.45 - 0.5, -1.5 - 0.45 - 0.5], rtol=1e-6)


def test_weight_decay_enters_the_trust_ratio():
  kernel = tf.Variable([[3.0, 4.0]])
  opt = Lars(0.1, momentum=0.0, weight_decay=0.1, eta=0.01)
  _step(opt, [kernel], [[[0.0, 0.0]]])
  # g' = 0.1 * w, ||g'|| = 0.5, trust = 0.01 * 5 / 0.5 = 0.1:
  # w -= 0.1 * 0.1 * 0.1 * w.
  np.testing.assert_allclose(kernel.numpy(),
                             np.array([[3.0, 4.0]]) * (1 - 1e-3), rtol=1e-6)


def test_zero_weights_take_the_plain_step():
  kernel = tf.Variable(tf.zeros([2, 2]))
  opt = Lars(0.5, momentum=0.0)
  _step(opt, [kernel], [[[1.0, 2.0], [3.0, 4.0]]])
  np.testing.assert_allclose(kernel.numpy(), [[-0.5, -1.0], [-1.5, -2.0]])


def test_build_optimizer_makes_lars_with_the_schedule():
  config = OptimizerConfig(name="lars", learning_rate=0.3, momentum=0.8,
                           weight_decay=1e-6, schedule="cosine",
                           warmup_epochs=1.0)
  opt = build_optimizer(config, steps_per_epoch=10, total_epochs=5)
  assert isinstance(opt, Lars)
  assert opt.momentum == 0.8 and opt.lars_weight_decay == 1e-6
  # Step 0 of a 10-step warm-up: lr = 0.3 * 1 / 10.
  np.testing.assert_allclose(float(opt.learning_rate), 0.03, rtol=1e-6)
