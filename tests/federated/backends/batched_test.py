"""The local backend's batched clients (backends/batched.py): the stacked
model equals the Keras one, two rounds of 3 clients with different step
counts end at the replica mode's weights, and what cannot be batched falls
back (auto) or is refused (on), convolutions included where TensorFlow
cannot differentiate a grouped convolution (oneDNN off on CPU)."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn import datasets
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated import AlgorithmConfig
from fedclf.federated.attack_config import AttackConfig
from fedclf.federated.algorithms import build_algorithm
from fedclf.federated.algorithms.fedprox import FedProxParams
from fedclf.federated.backends import batched
from fedclf.federated.backends.local import LocalBackend
from fedclf.federated.backends.protocol import BackendSpec
from fedclf.federated.backends.protocol import ClientTask
from fedclf.models import build_classifier
from fedclf.models import ModelConfig
from fedclf.models import stacked

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
BATCH = 8
STEPS = {0: 2, 1: 5, 2: 0}  # a straggler cut to zero steps too


def digits(limit=120):
  data = datasets.load_digits()
  x = (data.images[:limit, :, :, None] / 16.0).astype(np.float32)
  return x, data.target[:limit].astype(np.int64)


def model_fn(name):
  return lambda: build_classifier(name, (8, 8, 1), 10,
                                  ModelConfig(width_multiplier=0.25))


def spec(mode, name="cnn", algorithm="fedavg", params=None, momentum=0.0,
         decay=0.0):
  x, y = digits()
  config = AlgorithmConfig(
      client_lr=0.1, client_momentum=momentum, client_weight_decay=decay,
      client_optimizer="momentum" if momentum else "sgd")
  return BackendSpec(
      algorithm=build_algorithm(algorithm, config, params),
      model_fn=model_fn(name), x_train=x, y_train=y,
      batch_shape=(max(STEPS.values()), BATCH), clients_per_round=3,
      num_clients=3, seed=0, parallel_clients=2, client_batching=mode,
      num_classes=10)


def tasks(round_num, malicious=()):
  """Client c's batches: rows of its 21 examples (batch 2 one short)."""
  rng = np.random.default_rng(round_num)
  out = []
  for cid, steps in STEPS.items():
    mine = np.arange(cid * 40, cid * 40 + 21)
    matrix = np.full((max(STEPS.values()), BATCH), -1, np.int32)
    for s in range(steps):
      batch = rng.choice(mine, BATCH - (s == 1), replace=False)
      matrix[s, :len(batch)] = batch
    out.append(ClientTask(cid, matrix, steps, len(mine),
                          np.array([round_num, cid], np.int64),
                          float(cid in malicious)))
  return out


def two_rounds(work, name, malicious=()):
  """The state and outputs after rounds 1 and 2 (client states kept)."""
  state = work.initial_state(model_fn(name)())
  client_states = {}
  for r in (1, 2):
    state, outputs = work.run_round(state, tasks(r, malicious),
                                    client_states, r)
    for t, o in zip(tasks(r), outputs):
      if o.client_state:
        client_states[t.client_id] = [np.asarray(s) for s in o.client_state]
  return state, outputs


# niid_bench_cnn at 28x28: its convolutions unpadded ('valid').
@pytest.mark.parametrize("name,side", [("lenet5", 8), ("niid_bench_cnn", 28)])
def test_stacked_forward_matches_keras_per_client(name, side):
  models = [build_classifier(name, (side, side, 1), 10,
                             ModelConfig(width_multiplier=0.25))
            for _ in range(3)]
  for i, m in enumerate(models):
    m.set_weights([w + 0.01 * i for w in m.get_weights()])
  plan = stacked.plan_for(models[0])
  weights = [tf.stack(ws) for ws in
             zip(*[m.trainable_variables for m in models])]
  x = tf.random.stateless_normal([3, 4, side, side, 1], [0, 1])
  got = stacked.forward(plan, weights, x)
  for k, m in enumerate(models):
    np.testing.assert_allclose(got[k], m(x[k]), rtol=1e-5, atol=1e-5)


CASES = [
    ("cnn", "fedavg", None, 0.0, 0.0),
    ("mlp", "fedavg", None, 0.9, 1e-3),
    ("cnn", "fedprox", FedProxParams(prox_mu=0.5), 0.9, 0.0),
    ("mlp", "scaffold", None, 0.9, 0.0),
    ("cnn", "scaffold", None, 0.0, 1e-3),
    # Clients of 2, 5 and 0 steps: FedNova's normalization differs per client.
    ("cnn", "fednova", None, 0.9, 0.0),
]


@pytest.mark.parametrize("name,algorithm,params,momentum,decay", CASES)
def test_batched_rounds_match_replicas(name, algorithm, params, momentum,
                                       decay):
  results = {}
  for mode in ("on", "off"):
    work = LocalBackend(spec(mode, name, algorithm, params, momentum, decay))
    assert (work.batched is not None) == (mode == "on")
    results[mode] = two_rounds(work, name)
  (on, on_outputs), (off, off_outputs) = results["on"], results["off"]
  for a, b in zip(on.trainable + on.extra, off.trainable + off.extra):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for a, b in zip(on_outputs, off_outputs):
    assert int(a.steps) == int(b.steps)
    np.testing.assert_allclose(a.loss_sum, b.loss_sum, rtol=1e-4)
    assert float(a.correct) == float(b.correct)
    assert float(a.examples) == float(b.examples)


@pytest.mark.parametrize("attack", ["label_flip", "sign_flip"])
def test_attacked_clients_match_replicas(attack):
  finals = []
  for mode in ("on", "off"):
    work = LocalBackend(dataclasses.replace(spec(mode, "mlp"), attack=(
        AttackConfig(malicious_fraction=0.3, attack=attack))))
    finals.append(two_rounds(work, "mlp", malicious=(1,))[0])
  for a, b in zip(finals[0].trainable, finals[1].trainable):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def batch_norm_model():
  return tf.keras.Sequential([
      tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
      tf.keras.layers.BatchNormalization(), tf.keras.layers.Dense(10)])


@pytest.mark.parametrize("change", [
    {"model_fn": batch_norm_model},
    {"algorithm": build_algorithm("moon", AlgorithmConfig())},
])
def test_unsupported_falls_back_on_auto_and_is_refused_on(change, caplog):
  changed = dataclasses.replace(spec("auto"), **change)
  with caplog.at_level("INFO"):
    work = LocalBackend(changed)
  assert work.batched is None and work.replicas
  assert "client batching off" in caplog.text
  with pytest.raises(UserError, match="client_batching=on"):
    LocalBackend(dataclasses.replace(changed, client_batching="on"))


def test_auto_batches_small_models_and_leaves_big_ones_in_replicas():
  # mlp: 199k weights, lenet5: 62k (convolutional), cnn: 1.66M.
  for small in ("mlp", "lenet5"):
    backend = LocalBackend(spec("auto", small))
    assert backend.batched is not None
    assert backend.execution.startswith("batched")
  # The McMahan CNN at MNIST size: 1.66M weights, above the threshold.
  assert "1,663,370 weights" in batched.auto_declines(
      build_classifier("cnn", (28, 28, 1), 10))
  assert batched.auto_declines(build_classifier("lenet5", (28, 28, 1),
                                                10)) is None
  backend = LocalBackend(spec("off", "mlp"))
  assert backend.execution == "replicas, 2 clients in parallel"


def test_grouped_conv_gradient_probe_tells_what_a_gradient_does():
  # The probe's answer is what a real grouped convolution's gradient does
  # here: oneDNN (fedclf turns it on before TensorFlow loads) and cuDNN
  # have the kernel, TensorFlow's own CPU kernels do not.
  x = tf.random.stateless_normal([3, 2, 6, 6, 4], [0, 2])
  kernel = tf.Variable(tf.random.stateless_normal([3, 3, 3, 4, 5], [0, 3]))
  try:
    with tf.GradientTape() as tape:
      y = tf.reduce_sum(stacked.grouped_conv(x, kernel, (1, 1), "SAME"))
    tape.gradient(y, kernel)
    works = True
  except tf.errors.InvalidArgumentError:
    works = False
  assert (stacked.grouped_conv_gradient_error() is None) == works
  if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1":
    assert works


def test_no_grouped_conv_gradient_falls_back_on_auto_and_is_refused_on(
    monkeypatch, caplog):
  monkeypatch.setattr(stacked, "grouped_conv_gradient_error",
                      lambda: "no grouped gradient here")
  with caplog.at_level("INFO"):
    backend = LocalBackend(spec("auto", "lenet5"))
  assert backend.batched is None and backend.replicas
  assert "has convolutions and no grouped gradient here" in caplog.text
  with pytest.raises(UserError, match="client_batching=on: model .* has "
                     "convolutions and no grouped gradient here"):
    LocalBackend(spec("on", "lenet5"))
  # Models without convolutions batch as before.
  assert LocalBackend(spec("auto", "mlp")).batched is not None


def test_onednn_off_trains_lenet5_in_replicas_end_to_end(tmp_path):
  # What an AVX2-only CPU does with oneDNN off (TensorFlow's default there):
  # the LeNet-5 run trains in replicas instead of raising in every client,
  # and the run records oneDNN's state.
  env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0")
  out = tmp_path / "run"
  subprocess.run(
      [sys.executable, "-m", "simulations.federated", "--dataset=digits",
       "--model=lenet5", "--num_clients=4", "--clients_per_round=2",
       "--rounds=1", "--local_epochs=1", "--per_client_eval=0",
       f"--out_dir={out}"], env=env, check=True, capture_output=True,
      cwd=ROOT)
  summary = json.loads((out / "summary.json").read_text())
  assert summary["client_execution"].startswith("replicas")
  assert json.loads((out / "config.json").read_text())["onednn"] is False


def test_unsorted_group_masks_every_client_as_the_sorted_one_skips():
  # The local backend orders a group by descending steps, so a step
  # computes only its active clients (a prefix); in any other order every
  # client is computed and the finished ones masked. Same outputs.
  work = LocalBackend(spec("on", "cnn", momentum=0.9))
  state = work.initial_state(model_fn("cnn")())
  inputs = tuple([tf.constant(w) for w in part] for part in
                 (state.trainable, state.non_trainable, state.extra))
  blank = work.initial_client_state(state)
  group = tasks(1)  # steps 2, 5, 0: not descending
  outputs = {}
  for name, order in (("given", [0, 1, 2]), ("descending", [1, 0, 2])):
    got = work._train_tasks(inputs, [group[i] for i in order], {}, blank,
                            None)
    outputs[name] = {group[i].client_id: o for i, o in zip(order, got)}
  for cid in STEPS:
    a, b = outputs["given"][cid], outputs["descending"][cid]
    assert int(a.steps) == int(b.steps) == STEPS[cid]
    for x, y in zip(a.delta, b.delta):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.loss_sum, b.loss_sum, rtol=1e-5)
