"""Client work on its own: SCAFFOLD's control-variate step."""

import numpy as np
import pytest
import tensorflow as tf

from fedclf.federated import AlgorithmConfig
from fedclf.federated.client_work import Scaffold


def momentum_sgd(x, gradient, lr, momentum, steps):
  """The local optimizer of LocalSGD.train on a constant gradient."""
  velocity = np.zeros_like(x)
  for _ in range(steps):
    velocity = momentum * velocity + gradient
    x = x - lr * velocity
  return x


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("steps", [1, 7, 300])
def test_control_variate_recovers_the_gradient(momentum, steps):
  # With c = c_i = 0 the clients' corrected gradient is the plain one, and
  # option II must return it as the new control variate whatever the
  # momentum; dividing by K * lr returned it times ~1 / (1 - momentum).
  work = Scaffold(AlgorithmConfig(
      client_lr=0.05, client_optimizer=(
          "momentum" if momentum else "sgd"), client_momentum=momentum))
  gradient = np.array([0.3, -1.2, 2.0], np.float32)
  x = np.array([1.0, 2.0, 3.0], np.float32)
  y = momentum_sgd(x, gradient, 0.05, momentum, steps)
  zeros = [tf.zeros(3)]
  delta, new_state = work.finish([tf.constant(x)], [tf.constant(y)],
                                 tf.constant(steps), zeros, zeros)
  np.testing.assert_allclose(new_state[0].numpy(), gradient, rtol=1e-3)
  np.testing.assert_allclose(delta[0].numpy(), gradient, rtol=1e-3)


def test_a_client_that_ran_no_step_keeps_its_state():
  work = Scaffold(AlgorithmConfig(client_lr=0.1))
  state = [tf.constant([1.0, -1.0])]
  delta, new_state = work.finish([tf.zeros(2)], [tf.zeros(2)],
                                 tf.constant(0), state, [tf.zeros(2)])
  np.testing.assert_allclose(new_state[0].numpy(), [1.0, -1.0])
  np.testing.assert_allclose(delta[0].numpy(), [0.0, 0.0])
