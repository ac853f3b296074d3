"""Every registered SSL method: a gradient step inside one tf.function, the
registry contract, and the pretraining loop's resume and divergence."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from fedclf.data import DataConfig
from fedclf.data import load_dataset
from fedclf.errors import DivergenceError
from fedclf.errors import UserError
from fedclf.models import build_model_parts
from fedclf.models import ModelConfig
from fedclf.registry import DuplicateNameError
from fedclf.registry import SSL_METHODS
from fedclf.registry import UnknownNameError
from fedclf.ssl import build_method
from fedclf.ssl import default_for
from fedclf.ssl import PretrainConfig
from fedclf.ssl import pretrain_encoder
from fedclf.ssl import ssl_step_loss
from fedclf.ssl import ByolParams
from fedclf.ssl import SimSiamParams
from fedclf.ssl import SslConfig
from fedclf.ssl.method import SslMethod
from fedclf.ssl.methods.byol import target_momentum
from fedclf.train import OptimizerConfig

METHODS = ("barlow_twins", "byol", "simclr", "simsiam", "vicreg")
# Small heads, SimSiam's and BYOL's predictor bottleneck included.
SMALL_PARAMS = {"simsiam": SimSiamParams(predictor_hidden_dim=8),
                "byol": ByolParams(predictor_hidden_dim=8)}


def small_config(name):
  return SslConfig(method=name, projection_dim=16, hidden_dim=32,
                   params=SMALL_PARAMS.get(name))


def small_encoder(model="cnn", shape=(8, 8, 1)):
  return build_model_parts(model, shape, 10,
                           ModelConfig(width_multiplier=0.125)).encoder


def test_builtin_methods_registered():
  assert set(METHODS) <= set(SSL_METHODS.names())
  with pytest.raises(UnknownNameError, match="choose one of: barlow_twins"):
    SSL_METHODS.get("moco")
  with pytest.raises(DuplicateNameError):
    SSL_METHODS.register("simclr")(lambda config, feature_dim: None)
  with pytest.raises(UnknownNameError):
    build_method(SslConfig(method="nope"), 8)


@pytest.mark.parametrize("name", METHODS)
def test_step_in_one_tf_function_trains_encoder_and_heads(name):
  encoder = small_encoder()
  method = build_method(small_config(name),
                        encoder.output_shape[-1])
  assert isinstance(method, SslMethod)
  method.build(encoder)
  variables = encoder.trainable_variables + method.heads.trainable_variables
  before = [v.numpy().copy() for v in variables]
  optimizer = tf.keras.optimizers.SGD(0.1)
  augment = default_for("digits")
  images = np.random.default_rng(0).random((8, 8, 8, 1)).astype(np.float32)

  @tf.function
  def step(x, seed):
    with tf.GradientTape() as tape:
      loss = ssl_step_loss(method, encoder, x, seed, augment)
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    method.after_step(encoder)
    return loss

  if name == "byol":
    target_before = method.target_encoder.get_weights()[0].copy()
  losses = [float(step(images, tf.constant([0, i], tf.int64)))
            for i in range(2)]
  assert all(np.isfinite(losses))
  changed = [not np.allclose(b, v.numpy()) for b, v in zip(before, variables)]
  assert changed[0], "encoder weights did not move"
  assert changed[-1], "head weights did not move"
  if name == "byol":
    assert not np.allclose(target_before,
                           method.target_encoder.get_weights()[0])


def test_byol_target_momentum_schedules_hand_computed():
  constant = [float(target_momentum(0.99, "constant", p))
              for p in (0.0, 0.5, 1.0)]
  np.testing.assert_allclose(constant, [0.99, 0.99, 0.99], rtol=1e-6)
  # 1 - 0.01 (cos(pi p) + 1) / 2 at p = 0, 1/2, 1 (clipped beyond).
  cosine = [float(target_momentum(0.99, "cosine", p))
            for p in (0.0, 0.5, 1.0, 1.5)]
  np.testing.assert_allclose(cosine, [0.99, 0.995, 1.0, 1.0], rtol=1e-6)
  with pytest.raises(UserError, match="byol_momentum_schedule"):
    ByolParams(byol_momentum_schedule="linear").validate()


def test_byol_target_normalizes_by_the_batch_like_the_online_network():
  # Same weights at build: in training mode (BatchNorm on the batch's
  # statistics) the target's features equal the online encoder's.
  encoder = small_encoder("cnn_gap", (16, 16, 1))  # BatchNorm in each block
  method = build_method(small_config("byol"), encoder.output_shape[-1])
  method.build(encoder)
  images = np.random.default_rng(0).random((6, 16, 16, 1)).astype(np.float32)
  np.testing.assert_allclose(
      method.target_encoder(images, training=True).numpy(),
      encoder(images, training=True).numpy(), rtol=1e-5, atol=1e-6)


def test_byol_cosine_schedule_moves_the_target_by_progress():
  encoder = small_encoder("mlp")
  method = build_method(SslConfig(
      method="byol", projection_dim=16, hidden_dim=32,
      params=ByolParams(predictor_hidden_dim=8, byol_momentum=0.5,
                        byol_momentum_schedule="cosine")), 25)
  method.build(encoder)
  online = encoder.weights[0]
  target = method.target_encoder.weights[0]
  target.assign(tf.zeros_like(target))
  online.assign(tf.ones_like(online))
  # progress 1/2: m = 1 - 0.5 * (0 + 1) / 2 = 0.75, so t = 0.25 * 1.
  method.after_step(encoder, tf.constant(0.5))
  np.testing.assert_allclose(target.numpy(), 0.25, rtol=1e-6)
  method.after_step(encoder, tf.constant(1.0))  # m = 1: frozen target
  np.testing.assert_allclose(target.numpy(), 0.25, rtol=1e-6)
  with pytest.raises(ValueError, match="needs progress"):
    method.after_step(encoder)


@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_loss_depends_on_seed_alone(name):
  encoder = small_encoder("mlp")
  method = build_method(small_config(name), 25)
  method.build(encoder)
  images = np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32)
  augment = default_for(1)

  def loss(seed):
    return float(ssl_step_loss(method, encoder, images, tf.constant(seed),
                               augment, training=False))

  assert loss([1, 2]) == loss([1, 2])
  assert loss([1, 2]) != loss([1, 3])


@pytest.fixture(scope="module")
def digits():
  return load_dataset(DataConfig("digits", train_limit=200))


def config(epochs):
  return PretrainConfig(epochs=epochs, batch_size=64,
                        optimizer=OptimizerConfig("adam", 1e-3,
                                                  schedule="cosine"),
                        seed=3)


def test_resume_of_a_finished_run_restores_and_trains_nothing(digits,
                                                            tmp_path):
  ckpt = str(tmp_path / "ckpt")
  encoder = small_encoder("mlp")
  method = build_method(small_config("simclr"), 25)
  done = pretrain_encoder(encoder, method, digits.x_train, config(2),
                          checkpoint_dir=ckpt)
  assert [r["epoch"] for r in done.history] == [1, 2]
  resumed = small_encoder("mlp")
  result = pretrain_encoder(
      resumed, build_method(small_config("simclr"), 25),
      digits.x_train, config(2), checkpoint_dir=ckpt, resume=True)
  assert result.history == [] and result.epochs_run == 2
  for a, b in zip(encoder.get_weights(), resumed.get_weights()):
    np.testing.assert_array_equal(a, b)


BYOL_COSINE = SslConfig(method="byol", projection_dim=16, hidden_dim=32,
                        params=ByolParams(predictor_hidden_dim=8,
                                          byol_momentum_schedule="cosine"))


# BYOL with the cosine momentum: its target and the schedule's position
# (the optimizer's step count) resume too.
@pytest.mark.parametrize("ssl_config", [small_config("simclr"), BYOL_COSINE],
                         ids=["simclr", "byol_cosine"])
def test_resume_mid_run_matches(digits, tmp_path, ssl_config):
  ckpt = str(tmp_path / "ckpt")
  encoder = small_encoder("mlp")
  method = build_method(ssl_config, 25)
  full = pretrain_encoder(encoder, method, digits.x_train, config(2))

  # An interrupted run: one epoch of a 2-epoch schedule, checkpointed.
  part = small_encoder("mlp")
  part_method = build_method(ssl_config, 25)
  interrupted = dataclasses.replace(config(2), checkpoint_every=1)
  fail_after_one = _StopAfter(1)
  with pytest.raises(_Stop):
    pretrain_encoder(part, part_method, digits.x_train, interrupted,
                     recorder=fail_after_one, checkpoint_dir=ckpt)
  resumed = small_encoder("mlp")
  resumed_method = build_method(ssl_config, 25)
  rest = pretrain_encoder(resumed, resumed_method, digits.x_train,
                          interrupted, checkpoint_dir=ckpt, resume=True)
  assert [r["epoch"] for r in rest.history] == [2]
  assert rest.history[0]["loss"] == pytest.approx(full.history[1]["loss"],
                                                  rel=1e-5)
  for a, b in zip(encoder.get_weights(), resumed.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


class _Stop(Exception):
  pass


class _StopAfter:
  """A recorder stand-in that interrupts the run after N epochs' metrics.

  Metrics are logged before the epoch's checkpoint, so the interruption
  lands after epoch N - 1's checkpoint: raise on N + 1 instead.
  """

  def __init__(self, epochs):
    self.epochs = epochs

  def log_metrics(self, step, metrics, step_name):
    del metrics, step_name
    if step > self.epochs:
      raise _Stop()


def test_divergence_is_a_user_error(digits, tmp_path):
  encoder = small_encoder("mlp")
  method = build_method(small_config("simclr"), 25)
  exploding = dataclasses.replace(config(1),
                                  optimizer=OptimizerConfig("sgd", 1e30))
  with pytest.raises(DivergenceError, match="diverged at epoch 1"):
    pretrain_encoder(encoder, method, digits.x_train, exploding,
                     checkpoint_dir=str(tmp_path))
