"""Federated BYOL (per-client target network) and FedEMA: the update rules
against hand-computed numpy examples, 2-round runs, resume with the
clients' targets restored."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated import AlgorithmConfig
from fedclf.federated.algorithms import build_algorithm
from fedclf.federated.algorithms import FedEmaParams
from fedclf.federated.algorithms.fedema import divergence_aware_start
from fedclf.federated.algorithms.fedema import FedEmaWork
from fedclf.federated.byol_target import ema
from fedclf.federated.byol_target import PerClientTarget
from fedclf.federated.byol_target import target_variables
from fedclf.federated.byol_target import with_target_network
from fedclf.federated.client_work import IndexedBatches
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.ssl_objective import build_ssl_trainable
from fedclf.federated.ssl_objective import ssl_objective
from fedclf.models import ModelConfig
from fedclf.ssl import ByolParams
from fedclf.ssl import SslConfig
from fedclf.ssl.augment import default_for

from tests.federated.simulation_test import run
from tests.federated.simulation_test import tiny_config


def _start(global_w, previous, meta, lam, tau):
  start, new_meta, mu = divergence_aware_start(
      [tf.constant(w) for w in global_w], [tf.constant(p) for p in previous],
      tf.constant(meta, tf.float32), lam, tau)
  return [s.numpy() for s in start], new_meta.numpy(), float(mu)


def test_fedema_rule_hand_computed():
  g = [np.array([1.0, 2.0], np.float32), np.array([[0.0]], np.float32)]
  p = [np.array([1.0, 0.0], np.float32), np.array([[1.0]], np.float32)]
  # |g - p| = sqrt(0 + 4 + 1) = sqrt(5); mu = min(0.2 * sqrt(5), 1).
  mu = 0.2 * np.sqrt(5.0)
  start, meta, got_mu = _start(g, p, [1.0, -1.0], lam=0.2, tau=0.0)
  assert got_mu == pytest.approx(mu, rel=1e-6)
  np.testing.assert_allclose(start[0], [1.0, 2.0 * (1 - mu)], rtol=1e-6)
  np.testing.assert_allclose(start[1], [[mu]], rtol=1e-6)
  np.testing.assert_allclose(meta, [1.0, 0.2])
  # A large lambda: mu is capped at 1, the client keeps its own model.
  start, _, got_mu = _start(g, p, [1.0, -1.0], lam=10.0, tau=0.0)
  assert got_mu == 1.0
  np.testing.assert_allclose(start[0], p[0])
  # First round (never trained): the broadcast model, as FedAvg.
  start, meta, got_mu = _start(g, p, [0.0, -1.0], lam=10.0, tau=0.0)
  assert got_mu == 0.0
  np.testing.assert_allclose(start[0], g[0])
  np.testing.assert_allclose(meta, [1.0, -1.0])


def test_fedema_autoscaler_fixes_lambda_at_first_return():
  g = [np.array([3.0, 4.0], np.float32)]
  p = [np.zeros(2, np.float32)]
  # First return: lambda = tau / |g - p| = 0.7 / 5, so mu = tau.
  start, meta, mu = _start(g, p, [1.0, -1.0], lam=99.0, tau=0.7)
  assert mu == pytest.approx(0.7)
  np.testing.assert_allclose(start[0], [0.9, 1.2], rtol=1e-6)
  np.testing.assert_allclose(meta, [1.0, 0.14], rtol=1e-6)
  # Later: the stored lambda, |g - p| = 10 now, mu = min(1.4, 1) = 1.
  _, meta, mu = _start([2 * g[0]], p, meta, lam=99.0, tau=0.7)
  assert mu == 1.0 and meta[1] == pytest.approx(0.14)


def _dense_model():
  model = tf.keras.Sequential([tf.keras.layers.Dense(
      1, kernel_initializer="zeros", input_shape=(2,))])
  return model


def test_fedema_work_reports_delta_from_the_broadcast_model():
  # client_lr 0: local = start, so delta = global - start and the state is
  # the start.
  work = FedEmaWork(AlgorithmConfig(client_lr=0.0), lam=0.2, tau=0.0)
  model = _dense_model()
  g = [np.array([[1.0], [2.0]], np.float32), np.array([0.0], np.float32)]
  p = [np.array([[1.0], [0.0]], np.float32), np.array([1.0], np.float32)]
  batches = IndexedBatches(tf.zeros((4, 2)), tf.zeros((4,), tf.int32),
                           tf.constant([[0, 1], [2, 3]]), tf.constant(2))
  velocity = [tf.Variable(tf.zeros_like(v)) for v in model.trainable_variables]
  out = work.train(model, velocity, [tf.constant(w) for w in g], [],
                   batches, tf.constant(4), [tf.constant(w) for w in p] +
                   [tf.constant([1.0, -1.0])], [], tf.constant([1, 2],
                                                              tf.int64))
  mu = 0.2 * np.sqrt(5.0)
  start = [mu * b + (1 - mu) * a for a, b in zip(g, p)]
  for d, a, s in zip(out.delta, g, start):
    np.testing.assert_allclose(d.numpy(), a - s, rtol=1e-5, atol=1e-6)
  for got, s in zip(out.client_state[:-1], start):
    np.testing.assert_allclose(got.numpy(), s, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.client_state[-1].numpy(), [1.0, 0.2])


def test_fedema_params_validate():
  with pytest.raises(UserError, match="fedema_lambda"):
    build_algorithm("fedema", AlgorithmConfig(),
                    FedEmaParams(fedema_lambda=-1.0))


def _byol_model(momentum):
  return build_ssl_trainable(
      "mlp", (8, 8, 1), 10, ModelConfig(),
      SslConfig(method="byol", projection_dim=8, hidden_dim=16,
                params=ByolParams(predictor_hidden_dim=8,
                                  byol_momentum=momentum)))


def test_byol_target_ema_per_client_hand_computed():
  # client_lr 0 keeps the online network's trainable weights w fixed, so
  # after K steps from target t0 the target is m^K t0 + (1 - m^K) w.
  m, steps = 0.5, 3
  model = _byol_model(m)
  objective = ssl_objective(default_for("digits", 1), None, "byol")
  work = PerClientTarget(LocalSGD(AlgorithmConfig(client_lr=0.0))
                         ).with_objective(objective).with_model(model)
  online = [v.numpy() for v in model.trainable_variables]
  non_trainable = [v.numpy() for v in model.non_trainable_variables]
  # Target encoder and projector (not the predictor), then the fresh flag.
  fresh = work.initial_client_state([tf.constant(w) for w in online])
  assert len(fresh) == len(target_variables(model)) + 1
  assert float(fresh[-1]) == 1.0
  assert sum(t for t, _ in work.layout) < len(online)
  rng = np.random.default_rng(0)
  batches = IndexedBatches(
      tf.constant(rng.uniform(size=(12, 8, 8, 1)), tf.float32),
      tf.zeros((12,), tf.int32), tf.reshape(tf.range(12), (steps, 4)),
      tf.constant(steps))
  velocity = [tf.Variable(tf.zeros_like(v)) for v in model.trainable_variables]

  def train(state):
    out = work.train(model, velocity, [tf.constant(w) for w in online],
                     [tf.constant(w) for w in non_trainable], batches,
                     tf.constant(12), state, [], tf.constant([5, 6],
                                                              tf.int64))
    assert int(out.steps) == steps and float(out.client_state[-1]) == 0.0
    return [t.numpy() for t in out.client_state[:-1]]

  t0 = [np.full(s.shape, 3.0, np.float32) for s in fresh[:-1]]
  new = train([tf.constant(t) for t in t0] + [tf.constant(0.0)])
  for got, t, (is_trainable, i) in zip(new, t0, work.layout):
    if is_trainable:
      expected = m ** steps * t + (1 - m ** steps) * online[i]
      np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  # A fresh client's target starts as the broadcast online network, so with
  # w fixed it stays w.
  new = train(fresh)
  for got, (is_trainable, i) in zip(new, work.layout):
    if is_trainable:
      np.testing.assert_allclose(got, online[i], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ema([np.float32(3.0)], [np.float32(1.0)], m),
                             [2.0])


def _byol_config(algorithm="fedavg", rounds=2):
  return dataclasses.replace(
      tiny_config(algorithm, rounds=rounds), objective="byol",
      ssl=SslConfig(method="byol", projection_dim=16, hidden_dim=32,
                    params=ByolParams(predictor_hidden_dim=8)),
      knn_train_examples=200)


@pytest.mark.parametrize("algorithm", ["fedavg", "fedema"])
def test_federated_byol_two_rounds(tmp_path, algorithm):
  sim, summary = run(_byol_config(algorithm), tmp_path)
  assert summary["objective"] == "byol" and summary["rounds_run"] == 2
  assert 0.0 <= summary["linear_probe_accuracy"] <= 1.0
  # The server aggregates the online network only (encoder and heads).
  assert len(sim.final_state.trainable) == len(
      sim.eval_model.trainable_variables)
  assert isinstance(sim.algorithm.client_work, PerClientTarget)
  assert all(np.isfinite(w).all() for w in sim.final_state.trainable)


def test_byol_resume_restores_the_clients_targets(tmp_path):
  full = _byol_config("fedema", rounds=3)
  sim_a, _ = run(full, tmp_path / "a")
  run(_byol_config("fedema", rounds=2), tmp_path / "b")
  sim_b, _ = run(full, tmp_path / "b", resume=True)
  for a, b in zip(sim_a.final_state.trainable, sim_b.final_state.trainable):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_byol_refused_with_a_work_of_its_own_loop():
  algorithm = build_algorithm("fedper", AlgorithmConfig())
  objective = ssl_objective(default_for("digits", 1), None, "byol")
  with pytest.raises(UserError, match="byol cannot be federated"):
    with_target_network(algorithm, objective)


def test_byol_cosine_momentum_is_refused_federated():
  # Its ramp needs the training's total steps, which a client never knows.
  cosine = dataclasses.replace(
      _byol_config(),
      ssl=SslConfig(method="byol", params=ByolParams(
          byol_momentum_schedule="cosine")))
  with pytest.raises(UserError, match="centralized pretraining"):
    cosine.validate()
  _byol_config().validate()  # the constant momentum is accepted
