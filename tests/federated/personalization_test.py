"""Personalization: each client's held-out split, the personalized
algorithms' update rules against hand-computed numpy examples (a tiny
linear encoder + head), their personal models, bad settings, and a 2-round
run with per-client state surviving a checkpoint/resume."""

import dataclasses
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated import AlgorithmConfig
from fedclf.federated import SimulationConfig
from fedclf.federated.algorithms import DittoParams
from fedclf.federated.algorithms import FedRepParams
from fedclf.federated.algorithms import PerFedAvgParams
from fedclf.federated.algorithms import ReptileParams
from fedclf.federated.client_work import IndexedBatches
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.personal import batch_norm_mask
from fedclf.federated.personal import head_mask
from fedclf.federated.personal import split_clients
from fedclf.federated.personal_work import DittoWork
from fedclf.federated.personal_work import FedRepWork
from fedclf.federated.personal_work import PerFedAvgWork
from fedclf.federated.personal_work import PersonalPartSGD
from fedclf.federated.personal_work import ReptileWork

sys.path.insert(0, os.path.dirname(__file__))
from simulation_test import run, tiny_config  # noqa: E402 pylint: disable=g-import-not-at-top

LR = 0.1
X = np.array([[1.0, 2.0], [0.5, -1.0], [-1.0, 0.5], [2.0, 0.0]], np.float32)
Y = np.array([0, 1, 1, 0], np.int64)
W1 = np.array([[0.2, -0.1], [0.3, 0.4]], np.float32)  # encoder, no bias
W2 = np.array([[0.5, -0.2], [0.1, 0.3]], np.float32)  # head kernel
B2 = np.array([0.05, -0.05], np.float32)  # head bias
GLOBAL = [W1, W2, B2]


def tiny_model(batch_norm=False):
  inputs = tf.keras.Input((2,))
  x = tf.keras.layers.Dense(2, use_bias=False)(inputs)
  if batch_norm:
    x = tf.keras.layers.BatchNormalization()(x)
  encoder = tf.keras.Model(inputs, x, name="encoder")
  features = tf.keras.Input((2,))
  head = tf.keras.Model(features, tf.keras.layers.Dense(2)(features),
                        name="head")
  outer = tf.keras.Input((2,))
  return tf.keras.Model(outer, head(encoder(outer)))


def grads(x, y, w1, w2, b2):
  """Mean cross-entropy gradients of logits = x w1 w2 + b2."""
  h = x @ w1
  logits = h @ w2 + b2
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  g = (p - np.eye(2)[y]) / len(y)
  return x.T @ (g @ w2.T), h.T @ g, g.sum(0)


def sgd(weights, gradients, lr=LR):
  return [w - lr * g for w, g in zip(weights, gradients)]


def batches(rows):
  return IndexedBatches(tf.constant(X), tf.constant(Y),
                        tf.constant(np.array(rows, np.int32)),
                        tf.constant(len(rows)))


def train(work, model, rows, client_state, global_weights=GLOBAL, nt=None):
  velocity = [tf.Variable(tf.zeros_like(v)) for v in model.trainable_variables]
  if nt is None:
    nt = [v.numpy() for v in model.non_trainable_variables]
  return work.train(model, velocity, [tf.constant(w) for w in global_weights],
                    [tf.constant(v) for v in nt], batches(rows),
                    tf.constant(float(len(X))),
                    [tf.constant(s) for s in client_state], [],
                    tf.constant([0, 0], tf.int64))


def close(actual, expected):
  for a, e in zip(actual, expected):
    np.testing.assert_allclose(np.asarray(a), e, rtol=1e-5, atol=1e-6)


def test_split_is_disjoint_seeded_and_keeps_a_training_example():
  clients = [np.arange(10), np.arange(10, 13), np.array([13]), np.array([])]
  train_a, test_a = split_clients(clients, 0.5, seed=1)
  train_b, test_b = split_clients(clients, 0.5, seed=1)
  _, test_c = split_clients(clients, 0.5, seed=2)
  for tr, te, orig in zip(train_a, test_a, clients):
    assert not set(tr) & set(te)
    assert sorted(set(tr) | set(te)) == sorted(orig)
  assert [len(t) for t in test_a] == [5, 1, 0, 0]
  assert all(len(t) >= 1 for t in train_a[:3])
  assert all(np.array_equal(a, b) for a, b in zip(test_a, test_b))
  assert not np.array_equal(test_a[0], test_c[0])
  # Even a fraction near 1 leaves one training example.
  train_d, _ = split_clients(clients, 0.99, seed=1)
  assert [len(t) for t in train_d[:3]] == [1, 1, 1]


def test_fedper_trains_the_clients_head_and_never_sends_it():
  model = tiny_model()
  work = PersonalPartSGD(AlgorithmConfig(client_lr=LR)).with_model(model)
  head_w = np.array([[0.3, 0.1], [-0.2, 0.2]], np.float32)
  head_b = np.array([0.0, 0.1], np.float32)
  out = train(work, model, [[0, 1]], [head_w, head_b])
  w1, w2, b2 = sgd([W1, head_w, head_b], grads(X[:2], Y[:2], W1, head_w,
                                                 head_b))
  close(out.delta, [W1 - w1, np.zeros((2, 2)), np.zeros(2)])
  close(out.client_state, [w2, b2])
  # A client that never trained starts from the global head.
  close(work.initial_client_state(GLOBAL), [W2, B2])


def test_fedrep_trains_the_head_first_then_the_encoder():
  model = tiny_model()
  work = FedRepWork(AlgorithmConfig(client_lr=LR), 1).with_model(model)
  out = train(work, model, [[0, 1]], [W2, B2])
  g1, g2, gb = grads(X[:2], Y[:2], W1, W2, B2)
  w2, b2 = W2 - LR * g2, B2 - LR * gb  # head pass, encoder frozen
  w1 = W1 - LR * grads(X[:2], Y[:2], W1, w2, b2)[0]  # encoder pass
  close(out.delta, [W1 - w1, np.zeros((2, 2)), np.zeros(2)])
  close(out.client_state, [w2, b2])
  assert int(out.steps) == 2


def test_ditto_trains_fedavg_and_a_regularized_personal_model():
  model = tiny_model()
  lam = 0.5
  work = DittoWork(AlgorithmConfig(client_lr=LR), lam)
  v = [W1 + 0.1, W2 - 0.1, B2 + 0.2]
  out = train(work, model, [[0, 1], [2, 3]], v)
  w = list(GLOBAL)
  for rows in ([0, 1], [2, 3]):
    w = sgd(w, grads(X[rows], Y[rows], *w))
  close(out.delta, [g - l for g, l in zip(GLOBAL, w)])
  for rows in ([0, 1], [2, 3]):
    v = sgd(v, [g + lam * (p - w0) for g, p, w0 in
                zip(grads(X[rows], Y[rows], *v), v, GLOBAL)])
  close(out.client_state, v)


def test_per_fedavg_meta_step_on_two_batches():
  model = tiny_model()
  alpha, beta = 0.2, 0.05
  work = PerFedAvgWork(AlgorithmConfig(client_lr=LR), alpha, beta)
  out = train(work, model, [[0, 1], [2, 3]], [])
  w = list(GLOBAL)
  for d1, d2 in (([0, 1], [2, 3]), ([2, 3], [0, 1])):
    inner = sgd(w, grads(X[d1], Y[d1], *w), alpha)
    w = sgd(w, grads(X[d2], Y[d2], *inner), beta)
  close(out.delta, [g - l for g, l in zip(GLOBAL, w)])
  assert int(out.steps) == 2


def test_reptile_runs_k_inner_steps_and_weights_each_task_once():
  model = tiny_model()
  work = ReptileWork(AlgorithmConfig(client_lr=LR), inner_steps=3)
  out = train(work, model, [[0, 1], [2, 3]], [])
  w = list(GLOBAL)
  for rows in ([0, 1], [2, 3], [0, 1]):  # cycles through the batches
    w = sgd(w, grads(X[rows], Y[rows], *w))
  close(out.delta, [g - l for g, l in zip(GLOBAL, w)])
  assert int(out.steps) == 3 and float(out.weight) == 1.0


def test_fedbn_keeps_batch_norm_on_the_client():
  model = tiny_model(batch_norm=True)
  mask = batch_norm_mask(model)
  # gamma, beta trainable; moving mean and variance non-trainable.
  assert mask.trainable == (False, True, True, False, False)
  assert mask.non_trainable == (True, True)
  work = PersonalPartSGD(AlgorithmConfig(client_lr=LR),
                         batch_norm_mask).with_model(model)
  global_weights = [W1, np.ones(2, np.float32), np.zeros(2, np.float32),
                    W2, B2]
  state = [np.full(2, 1.5, np.float32), np.full(2, 0.1, np.float32),
           np.full(2, 0.2, np.float32), np.full(2, 2.0, np.float32)]
  out = train(work, model, [[0, 1, 2, 3]], state, global_weights)
  # The same step as plain local SGD from the global weights with the
  # client's BatchNorm layers.
  reference = tiny_model(batch_norm=True)
  start = [W1, state[0], state[1], W2, B2]
  plain = train(LocalSGD(AlgorithmConfig(client_lr=LR)), reference,
                [[0, 1, 2, 3]], [], start, nt=state[2:])
  local = [s - d for s, d in zip(start, plain.delta)]
  close(out.delta[0::3], [W1 - local[0], W2 - local[3]])
  close(out.delta[1:3], [np.zeros(2), np.zeros(2)])
  # BN layers (trainable, then statistics) become the client's state; the
  # server gets the global statistics back.
  close(out.client_state, local[1:3] + list(plain.non_trainable))
  close(out.non_trainable, [np.zeros(2), np.ones(2)])


def test_personal_models():
  model = tiny_model()
  for var, value in zip(model.trainable_variables, GLOBAL):
    var.assign(value)
  head = [np.ones((2, 2), np.float32), np.ones(2, np.float32)]
  work = PersonalPartSGD(AlgorithmConfig())
  work.personalize(model, None)  # never trained: the global model
  close(model.trainable_variables, GLOBAL)
  work.personalize(model, head)
  close(model.trainable_variables, [W1] + head)
  v = [W1 * 2, W2 * 2, B2 * 2]
  DittoWork(AlgorithmConfig(), 0.1).personalize(model, v)
  close(model.trainable_variables, v)
  LocalSGD(AlgorithmConfig()).personalize(model, None)
  close(model.trainable_variables, v)
  assert head_mask(model).trainable == (False, True, True)


@pytest.mark.parametrize("params", [
    FedRepParams(fedrep_head_epochs=0), DittoParams(ditto_lambda=-1.0),
    ReptileParams(reptile_inner_steps=-1),
    PerFedAvgParams(perfedavg_alpha=0.0),
    SimulationConfig(client_test_fraction=1.0),
    SimulationConfig(finetune_steps=-1)])
def test_bad_settings_are_refused_in_one_line(params):
  with pytest.raises(UserError) as error:
    params.validate()
  assert "\n" not in str(error.value)


def test_fedbn_refuses_a_model_without_batch_norm(tmp_path):
  with pytest.raises(UserError, match="--norm=batch"):
    run(dataclasses.replace(tiny_config("fedbn"), model_name="mlp"),
        tmp_path)


def test_fedavg_with_fine_tuning_reports_client_accuracy(tmp_path):
  _, summary = run(tiny_config("fedavg", client_test_fraction=0.25,
                               finetune_steps=3), tmp_path)
  for kind in ("personal", "global_on_clients"):
    for stat in ("mean", "p10", "p50", "p90"):
      assert 0.0 <= summary[f"final_{kind}_accuracy_{stat}"] <= 1.0
  assert (summary["final_personal_accuracy_mean"] !=
          summary["final_global_on_clients_accuracy_mean"])


def test_client_heads_survive_resume(tmp_path):
  full = tiny_config("fedper", rounds=3, client_test_fraction=0.25)
  sim_a, summary_a = run(full, tmp_path / "a")
  first = dataclasses.replace(
      full, simulation=dataclasses.replace(full.simulation, rounds=2))
  run(first, tmp_path / "b")
  sim_b, summary_b = run(full, tmp_path / "b", resume=True)
  states_a = sim_a.evaluator.client_states
  states_b = sim_b.evaluator.client_states
  assert states_a and sorted(states_a) == sorted(states_b)
  for cid in states_a:
    close(states_b[cid], states_a[cid])
  close(sim_b.final_state.trainable, sim_a.final_state.trainable)
  assert summary_b["final_personal_accuracy_mean"] == pytest.approx(
      summary_a["final_personal_accuracy_mean"])
