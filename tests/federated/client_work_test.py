"""Client work on its own: SCAFFOLD's control-variate step."""

import numpy as np
import pytest
import tensorflow as tf

from fedclf.federated import AlgorithmConfig
from fedclf.federated.client_work import LocalSGD
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


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_client_weight_decay_shrinks_weights_like_an_l2_gradient(momentum):
  # A loss with zero gradient leaves only the decay term wd * w, which goes
  # through the momentum buffer like any gradient (PyTorch SGD's coupling).
  lr, decay, steps = 0.1, 0.5, 3
  work = LocalSGD(AlgorithmConfig(
      client_lr=lr, client_weight_decay=decay, client_momentum=momentum,
      client_optimizer="momentum" if momentum else "sgd"))

  def flat_loss(model, images, labels, mask, seed):
    del images, labels, seed
    zero = 0.0 * tf.add_n([tf.reduce_sum(v) for v in model.trainable_variables])
    return zero, tf.constant(0.0), tf.reduce_sum(mask)

  work = work.with_objective(flat_loss)
  model = tf.keras.Sequential([tf.keras.layers.Dense(
      1, use_bias=False, input_shape=(2,))])
  start = np.array([[1.0], [-2.0]], np.float32)
  velocity = [tf.Variable(tf.zeros_like(v)) for v in model.trainable_variables]
  batches = tf.data.Dataset.from_tensors(
      (tf.zeros([1, 2]), tf.zeros([1], tf.int64), tf.ones([1]))).repeat(steps)
  out = work.train(model, velocity, [tf.constant(start)], [], batches,
                   tf.constant(1), [], [], tf.constant([0, 0], tf.int64))
  want, buf = start, np.zeros_like(start)
  for _ in range(steps):
    buf = momentum * buf + decay * want
    want = want - lr * buf
  np.testing.assert_allclose(out.delta[0].numpy(), start - want, rtol=1e-5)
  with pytest.raises(Exception, match="client_weight_decay"):
    AlgorithmConfig(client_weight_decay=-1.0).validate()
