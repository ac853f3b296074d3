"""FedNova, FedDyn, q-FedAvg and MOON: each update rule on the `local`
backend against a hand-computed numpy round (least squares on a 1-layer
linear model, 2-3 clients; MOON: a linear encoder + head against a numeric
gradient of its loss written in numpy), and their parameter checks."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated import AlgorithmConfig
from fedclf.federated.algorithms import build_algorithm
from fedclf.federated.algorithms.feddyn import FedDynParams
from fedclf.federated.algorithms.moon import contrastive_loss
from fedclf.federated.algorithms.moon import MoonParams
from fedclf.federated.algorithms.qfedavg import QFedAvgParams
from fedclf.federated.backends.local import LocalBackend
from fedclf.federated.backends.protocol import BackendSpec

LR = 0.1
# Six examples of two features; the label (0-2) is the regression target.
X = np.array([[1.0, 0.5], [0.2, -1.0], [0.7, 0.3], [-0.4, 0.9],
              [1.5, -0.2], [0.3, 0.8]], np.float32)
Y = np.array([0, 2, 1, 2, 0, 1], np.int64)
# Client id -> its examples (one full batch, repeated every local step).
CLIENTS = {0: [0, 1], 1: [2, 3, 4], 2: [5]}
W0 = np.array([[0.3], [-0.2]], np.float32)


def squared_error(model, images, labels, mask, seed):
  """Half the mean squared error of the linear model (hits: none)."""
  del seed  # Unused.
  residual = tf.squeeze(model(images), -1) - tf.cast(labels, tf.float32)
  count = tf.reduce_sum(mask)
  loss = 0.5 * tf.reduce_sum(tf.square(residual) * mask) / count
  return loss, tf.constant(0.0), count


def linear_model():
  model = tf.keras.Sequential([tf.keras.layers.Dense(
      1, use_bias=False, input_shape=(2,))])
  model.set_weights([W0])
  return model


def backend(name, params=None, momentum=0.0, model_fn=linear_model):
  config = AlgorithmConfig(
      client_lr=LR, client_momentum=momentum,
      client_optimizer="momentum" if momentum else "sgd")
  algorithm = build_algorithm(name, config, params)
  if name != "moon":  # MOON has its own (supervised) loss.
    algorithm = dataclasses.replace(
        algorithm, client_work=algorithm.client_work.with_objective(
            squared_error))
  return LocalBackend(BackendSpec(
      algorithm=algorithm, model_fn=model_fn, x_train=X, y_train=Y,
      batch_shape=(6, 3), clients_per_round=2, num_clients=len(CLIENTS),
      seed=0, parallel_clients=2))


def task(cid, steps):
  row = np.full(3, -1, np.int32)
  row[:len(CLIENTS[cid])] = CLIENTS[cid]
  matrix = np.tile(row, (6, 1))
  return (cid, matrix, steps, len(CLIENTS[cid]), np.zeros(2, np.int64))


def gradient(w, cid):
  x, y = X[CLIENTS[cid]], Y[CLIENTS[cid]].astype(np.float32)[:, None]
  return x.T @ (x @ w - y) / len(y)


def loss(w, cid):
  x, y = X[CLIENTS[cid]], Y[CLIENTS[cid]].astype(np.float32)[:, None]
  return 0.5 * np.mean(np.square(x @ w - y))


def local_sgd(w, cid, steps, momentum=0.0, extra=lambda w: 0.0):
  """LocalSGD.train's (momentum) SGD on client `cid`'s batch."""
  buf = np.zeros_like(w)
  for _ in range(steps):
    buf = momentum * buf + gradient(w, cid) + extra(w)
    w = w - LR * buf
  return w


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_fednova_normalizes_by_effective_steps(momentum):
  steps = {0: 2, 1: 5}
  work = backend("fednova", momentum=momentum)
  state = work.initial_state(linear_model())
  new_state, outputs = work.run_round(
      state, [task(c, s) for c, s in steps.items()], {}, 1)
  n = {c: len(CLIENTS[c]) for c in steps}
  p = {c: n[c] / sum(n.values()) for c in steps}
  a = {}
  for c, k in steps.items():
    a[c] = (k if not momentum else
            (k - momentum * (1 - momentum**k) / (1 - momentum)) /
            (1 - momentum))
  d = {c: (W0 - local_sgd(W0, c, k, momentum)) / a[c]
       for c, k in steps.items()}
  tau_eff = sum(p[c] * a[c] for c in steps)
  want = W0 - tau_eff * sum(p[c] * d[c] for c in steps)
  np.testing.assert_allclose(new_state.trainable[0], want, rtol=1e-5)
  assert [o.steps for o in outputs] == [2, 5]


def test_fednova_with_equal_steps_is_fedavg():
  tasks = [task(0, 3), task(1, 3)]
  nova = backend("fednova")
  avg = backend("fedavg")
  state = nova.initial_state(linear_model())
  a, _ = nova.run_round(state, tasks, {}, 1)
  b, _ = avg.run_round(state, tasks, {}, 1)
  np.testing.assert_allclose(a.trainable[0], b.trainable[0], rtol=1e-5)


def test_feddyn_two_rounds_match_the_paper():
  alpha = 0.5
  work = backend("feddyn", FedDynParams(feddyn_alpha=alpha))
  state = work.initial_state(linear_model())
  client_states = {}
  w, h = W0, np.zeros_like(W0)
  g = {c: np.zeros_like(W0) for c in CLIENTS}
  for round_num, (participants, steps) in enumerate(
      [([0, 1], 3), ([1, 2], 2)], start=1):
    state, outputs = work.run_round(
        state, [task(c, steps) for c in participants], client_states,
        round_num)
    for c, out in zip(participants, outputs):
      client_states[c] = [np.asarray(s) for s in out.client_state]
    local = {}
    for c in participants:
      local[c] = local_sgd(
          w, c, steps,
          extra=lambda v, c=c, w=w: alpha * (v - w) - g[c])
      g[c] = g[c] - alpha * (local[c] - w)
    h = h - alpha / len(CLIENTS) * sum(local[c] - w for c in participants)
    w = np.mean([local[c] for c in participants], axis=0) - h / alpha
    np.testing.assert_allclose(state.trainable[0], w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(state.extra[0], h, rtol=1e-4, atol=1e-6)
    for c in participants:
      np.testing.assert_allclose(client_states[c][0], g[c], rtol=1e-4,
                                 atol=1e-6)


@pytest.mark.parametrize("q", [0.0, 1.0, 2.0])
def test_qfedavg_step_is_the_q_ffl_step(q):
  steps = {0: 3, 1: 2, 2: 4}
  work = backend("qfedavg", QFedAvgParams(qffl_q=q))
  state = work.initial_state(linear_model())
  new_state, _ = work.run_round(
      state, [task(c, s) for c, s in steps.items()], {}, 1)
  lipschitz = 1.0 / LR
  num, den = 0.0, 0.0
  for c, k in steps.items():
    f = loss(W0, c)
    delta = lipschitz * (W0 - local_sgd(W0, c, k))
    num = num + f**q * delta
    den += q * f**(q - 1) * np.sum(np.square(delta)) + lipschitz * f**q
  want = W0 - num / den
  np.testing.assert_allclose(new_state.trainable[0], want, rtol=1e-4)


def test_qfedavg_with_q_zero_is_the_unweighted_mean():
  tasks = [task(0, 3), task(1, 2)]
  work = backend("qfedavg", QFedAvgParams(qffl_q=0.0))
  state, _ = work.run_round(work.initial_state(linear_model()), tasks, {}, 1)
  want = np.mean([local_sgd(W0, 0, 3), local_sgd(W0, 1, 2)], axis=0)
  np.testing.assert_allclose(state.trainable[0], want, rtol=1e-5)


ENCODER = np.array([[0.5, -0.3, 0.2], [0.1, 0.4, -0.6]], np.float32)
HEAD = np.array([[0.3, -0.2, 0.1], [0.0, 0.5, -0.4], [-0.3, 0.2, 0.6]],
                np.float32)


def encoder_head_model():
  """image [2] -> encoder (linear, 3 features) -> head (linear, 3 logits)."""
  encoder = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(
      3, use_bias=False)], name="encoder")
  head = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(
      3, use_bias=False)], name="head")
  inputs = tf.keras.Input((2,))
  model = tf.keras.Model(inputs, head(encoder(inputs)))
  model.set_weights([ENCODER, HEAD])
  return model


def np_contrastive(z, z_glob, z_prev, temperature):
  def cos(a, b):
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) *
                                np.linalg.norm(b, axis=-1))
  pos = np.exp(cos(z, z_glob) / temperature)
  neg = np.exp(cos(z, z_prev) / temperature)
  return -np.log(pos / (pos + neg))


def test_contrastive_loss_is_the_papers():
  rng = np.random.default_rng(0)
  z, z_glob, z_prev = (rng.normal(size=(4, 3)) for _ in range(3))
  got = contrastive_loss(*(tf.constant(t, tf.float32)
                           for t in (z, z_glob, z_prev)), 0.5)
  np.testing.assert_allclose(got.numpy(), np_contrastive(z, z_glob, z_prev,
                                                         0.5), rtol=1e-5)


def moon_loss(weights, glob, prev, cid, mu, temperature):
  """MOON's client loss in numpy (float64) on client `cid`'s batch."""
  x, y = X[CLIENTS[cid]].astype(np.float64), Y[CLIENTS[cid]]
  z = x @ weights[0]
  logits = z @ weights[1]
  logits = logits - logits.max(-1, keepdims=True)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce = -log_p[np.arange(len(y)), y]
  con = np_contrastive(z, x @ glob[0], x @ prev[0], temperature)
  return float(np.mean(ce + mu * con))


def numeric_gradient(f, weights, eps=1e-6):
  grads = []
  for i, w in enumerate(weights):
    g = np.zeros_like(w)
    for index in np.ndindex(w.shape):
      up = [v.copy() for v in weights]
      down = [v.copy() for v in weights]
      up[i][index] += eps
      down[i][index] -= eps
      g[index] = (f(up) - f(down)) / (2 * eps)
    grads.append(g)
  return grads


def test_moon_steps_follow_its_loss_and_keep_the_local_model():
  mu, temperature = 2.0, 0.5
  work = backend("moon", MoonParams(moon_mu=mu, moon_temperature=temperature),
                 model_fn=encoder_head_model)
  state = work.initial_state(encoder_head_model())
  glob = [w.astype(np.float64) for w in state.trainable]
  prev = [glob[0] + 0.3 * np.sign(glob[0] + 0.05), glob[1] - 0.2]
  client_states = {1: [p.astype(np.float32) for p in prev]}
  new_state, outputs = work.run_round(state, [task(1, 2)], client_states, 1)
  want = glob
  for _ in range(2):
    grads = numeric_gradient(
        lambda w: moon_loss(w, glob, prev, 1, mu, temperature), want)
    want = [w - LR * g for w, g in zip(want, grads)]
  for got, expected in zip(new_state.trainable, want):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
  for kept, expected in zip(outputs[0].client_state, want):
    np.testing.assert_allclose(kept, expected, rtol=1e-4, atol=1e-6)


def test_moon_first_round_of_a_client_is_fedavg():
  # Previous model = the broadcast one: l_con is log 2 with zero gradient.
  tasks = [task(0, 2), task(1, 3)]
  moon = backend("moon", model_fn=encoder_head_model)
  state = moon.initial_state(encoder_head_model())
  a, _ = moon.run_round(state, tasks, {}, 1)
  avg = build_algorithm("fedavg", AlgorithmConfig(client_lr=LR))
  b, _ = LocalBackend(dataclasses.replace(
      moon_spec(), algorithm=avg)).run_round(state, tasks, {}, 1)
  for x, y in zip(a.trainable, b.trainable):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def moon_spec():
  return BackendSpec(
      algorithm=None, model_fn=encoder_head_model, x_train=X, y_train=Y,
      batch_shape=(6, 3), clients_per_round=2, num_clients=len(CLIENTS),
      seed=0, parallel_clients=2)


def test_moon_refuses_a_self_supervised_objective():
  work = build_algorithm("moon", AlgorithmConfig()).client_work
  with pytest.raises(UserError, match="self-supervised"):
    work.with_objective(squared_error)


@pytest.mark.parametrize("name,params,match", [
    ("feddyn", FedDynParams(feddyn_alpha=0.0), "feddyn_alpha"),
    ("qfedavg", QFedAvgParams(qffl_q=-1.0), "qffl_q"),
    ("moon", MoonParams(moon_mu=-1.0), "moon_mu"),
    ("moon", MoonParams(moon_temperature=0.0), "moon_temperature"),
])
def test_bad_params_are_refused(name, params, match):
  with pytest.raises(UserError, match=match):
    build_algorithm(name, AlgorithmConfig(), params)
