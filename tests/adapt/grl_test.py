"""Gradient reversal: identity forward, gradient times -lambda backward; the
DANN lambda schedule."""

import math

import numpy as np
import pytest
import tensorflow as tf

from fedclf.adapt import dann_lambda
from fedclf.adapt import gradient_reversal


@pytest.mark.parametrize("lambda_", [0.0, 0.3, 1.0, 2.5])
def test_forward_identity_backward_reversed(lambda_):
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(4, 7)), tf.float32)
  weights = tf.constant(rng.normal(size=(4, 7)), tf.float32)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    plain = tf.reduce_sum(weights * tf.square(x))
    reversed_ = tf.reduce_sum(weights * tf.square(gradient_reversal(x,
                                                                    lambda_)))
  np.testing.assert_array_equal(gradient_reversal(x, lambda_).numpy(),
                                x.numpy())
  assert float(plain) == pytest.approx(float(reversed_))
  expected = -lambda_ * tape.gradient(plain, x).numpy()
  np.testing.assert_allclose(tape.gradient(reversed_, x).numpy(), expected,
                             rtol=1e-6, atol=1e-7)
  # Numerically, the unreversed gradient is the finite difference.
  eps = 1e-3
  bump = np.zeros((4, 7), np.float32)
  bump[1, 2] = eps
  f = lambda v: float(tf.reduce_sum(weights * tf.square(v)))
  numeric = (f(x + bump) - f(x - bump)) / (2 * eps)
  assert expected[1, 2] == pytest.approx(-lambda_ * numeric, rel=1e-2,
                                         abs=1e-3)


def test_tensor_lambda_in_tf_function_and_no_gradient_to_lambda():
  x = tf.Variable([[1.0, -2.0, 3.0]])

  @tf.function
  def grads(lambda_):
    with tf.GradientTape() as tape:
      tape.watch(lambda_)
      y = tf.reduce_sum(3.0 * gradient_reversal(x, lambda_))
    return tape.gradient(y, [x, lambda_])

  for value in (0.5, 2.0):
    dx, dlambda = grads(tf.constant(value))
    np.testing.assert_allclose(dx.numpy(), [[-3.0 * value] * 3])
    assert float(dlambda) == 0.0
  # Only layers before the reversal see the flipped sign.
  dense = tf.keras.layers.Dense(1, kernel_initializer="ones")
  with tf.GradientTape() as tape:
    y = tf.reduce_sum(dense(gradient_reversal(x, 1.0)))
  np.testing.assert_allclose(tape.gradient(y, dense.kernel).numpy(),
                             [[1.0], [-2.0], [3.0]])


def test_lambda_schedule():
  assert dann_lambda(0.0) == 0.0
  assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
  assert dann_lambda(0.5, maximum=0.1) == pytest.approx(
      0.1 * (2 / (1 + math.exp(-5)) - 1))
  values = [dann_lambda(p / 10) for p in range(11)]
  assert values == sorted(values) and values[-1] < 1.0
  assert dann_lambda(2.0) == dann_lambda(1.0)  # progress is clipped
