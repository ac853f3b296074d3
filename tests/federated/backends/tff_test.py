"""The `tff` backend: every algorithm runs on TFF's runtime, produces the same
weights as the `local` backend, and runs on two workers on localhost.

One module so TFF (~50 s to import) loads once.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fedclf.data import DataConfig
from fedclf.federated import AlgorithmConfig
from fedclf.federated import DpFedAvgParams
from fedclf.federated import FederatedRunConfig
from fedclf.federated import ReptileParams
from fedclf.federated import SimulationConfig
from fedclf.partition import DirichletParams
from fedclf.partition import PartitionConfig
from fedclf.registry import ALGORITHMS
from tests.federated.simulation_runs import final_weights

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def config(algorithm, backend, rounds=3, workers=(),
           dp_noise_multiplier=0.0, client_batching="auto",
           clients_per_call=0):
  params = (DpFedAvgParams(dp_noise_multiplier=dp_noise_multiplier,
                           dp_clip=0.5) if algorithm == "dp_fedavg" else None)
  if algorithm == "reptile":
    # Its k inner steps cycle the batches (a tf.data repeat on TFF).
    params = ReptileParams(reptile_inner_steps=7)
  return FederatedRunConfig(
      data=DataConfig(name="digits", train_limit=300, test_limit=100),
      partitioner="dirichlet",
      partition=PartitionConfig(num_clients=6, seed=1,
                                params=DirichletParams(dirichlet_alpha=0.5)),
      # FedBN needs BatchNorm layers (cnn_gap: 4 conv-BN blocks, ~2x faster
      # here than resnet20).
      model_name="cnn_gap" if algorithm == "fedbn" else "mlp",
      simulation=SimulationConfig(
          algorithm=algorithm,
          algorithm_config=AlgorithmConfig(client_lr=0.05, local_epochs=1,
                                           local_batch_size=16),
          algorithm_params=params, num_clients=6,
          clients_per_round=3, rounds=rounds, eval_every=rounds,
          checkpoint_every=0, per_client_eval=0, backend=backend,
          tff_workers=tuple(workers), client_batching=client_batching,
          tff_clients_per_call=clients_per_call, seed=1))


# DP-FedAvg with zero noise: TFF's DP aggregator and fedclf's clip alike.
PARITY = ["fedavg", "fedsgd", "fedprox", "fedavgm", "fedadam", "fedyogi",
          "fedadagrad", "scaffold", "dp_fedavg", "reptile", "fednova",
          "feddyn", "qfedavg", "moon", "fedper", "fedrep", "ditto", "fedbn",
          "per_fedavg", "fedema"]
# Those whose clients the local backend can train batched (on the MLP):
# their local runs are checked in both modes.
BATCHABLE = {"fedavg", "fedsgd", "fedprox", "fedavgm", "fedadam", "fedyogi",
             "fedadagrad", "scaffold", "dp_fedavg"}


def test_parity_covers_every_builtin_algorithm():
  # Plugins other tests loaded into this process (fedmedian) do not count.
  builtin = {n for n in ALGORITHMS.names()
             if ALGORITHMS.get(n).__module__.startswith("fedclf.")}
  assert set(PARITY) >= builtin


@pytest.mark.parametrize("algorithm", PARITY)
def test_backends_agree(tmp_path, algorithm):
  tff_state, summary = final_weights(config(algorithm, "tff"),
                                     tmp_path / "tff")
  assert summary["backend"] == "tff" and summary["rounds_run"] == 3
  for mode in ("on", "off") if algorithm in BATCHABLE else ("off",):
    local, _ = final_weights(
        config(algorithm, "local", client_batching=mode),
        tmp_path / f"local_{mode}")
    for a, b in zip(local.trainable, tff_state.trainable):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    for a, b in zip(local.extra, tff_state.extra):  # SCAFFOLD's c
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_dp_noise_on_tff_backend(tmp_path):
  state, summary = final_weights(
      config("dp_fedavg", "tff", rounds=2, dp_noise_multiplier=1.0),
      tmp_path)
  assert np.isfinite(summary["dp"]["epsilon"])
  assert all(np.isfinite(w).all() for w in state.trainable)


def test_two_workers_on_localhost(tmp_path):
  from fedclf.federated.backends import tff_workers  # pylint: disable=g-import-not-at-top
  workers = [tff_workers.start_local_worker() for _ in range(2)]
  try:
    local, _ = final_weights(config("fedavg", "local"), tmp_path / "local")
    remote, summary = final_weights(
        config("fedavg", "tff", workers=[w.address for w in workers]),
        tmp_path / "remote")
    # One client per round: the worker left with padding only is not
    # called (one sum back per round, not two).
    one = config("fedavg", "tff", workers=[w.address for w in workers])
    one = dataclasses.replace(one, simulation=dataclasses.replace(
        one.simulation, clients_per_round=1))
    _, one_summary = final_weights(one, tmp_path / "one_client")
  finally:
    for w in workers:
      w.stop()
  for a, b in zip(local.trainable, remote.trainable):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  # Each worker sends back one sum of its clients' updates per round (the
  # driver merges them and steps the server): 2 workers x 3 rounds.
  from fedclf.federated.communication import broadcast_bytes  # pylint: disable=g-import-not-at-top
  model = broadcast_bytes(remote)
  assert summary["tff_clients_as"] == "slices"
  assert abs(summary["total_bytes_received_from_workers"] -
             2 * 3 * model) <= 0.1 * 2 * 3 * model
  assert abs(one_summary["total_bytes_received_from_workers"] -
             3 * model) <= 0.1 * 3 * model


def test_subrounds_cover_the_round_evenly_over_the_workers():
  from fedclf.federated.backends.tff import subrounds  # pylint: disable=g-import-not-at-top
  assert subrounds(100, 20, 1) == 5
  assert subrounds(100, 30, 1) == 4  # slices of 25
  assert subrounds(100, 20, 2) == 6  # 3 per worker
  assert subrounds(3, 20, 2) == 2  # at least one per worker
  assert subrounds(100, 100, 1) == 1


def _metric_rows(out_dir):
  return [json.loads(line) for line in
          (out_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algorithm,per_call,form", [
    # One TFF client per client (DP's aggregator needs each update): 3
    # clients, 1 per call, three slices on one worker merged after their
    # aggregation by TFF's mergeable form.
    ("dp_fedavg", 1, "one_per_client"),
    # Slice round: 3 clients in slices of 2, the second with one real
    # client and one padding place, which must add nothing.
    ("fedavg", 2, "slices")])
def test_round_split_into_calls_matches_the_local_backend(
    tmp_path, algorithm, per_call, form):
  split, summary = final_weights(
      config(algorithm, "tff", clients_per_call=per_call), tmp_path / "split")
  assert summary["tff_clients_as"] == form
  assert summary["tff_clients_per_call"] == per_call
  local, _ = final_weights(config(algorithm, "local"), tmp_path / "local")
  for a, b in zip(local.trainable, split.trainable):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  for got, want in zip(_metric_rows(tmp_path / "split"),
                       _metric_rows(tmp_path / "local")):
    for key in ("examples", "clients_reported", "train_loss",
                "upload_bytes"):
      np.testing.assert_allclose(got[key], want[key], rtol=1e-5)


def test_pack_slices_spreads_clients_and_pads():
  from fedclf.federated.backends import tff_slices  # pylint: disable=g-import-not-at-top
  shape = tff_slices.slice_shape(5, 2)
  assert (shape.slice_size, shape.num_slices) == (3, 2)
  matrices = [np.full((2, 4), i, np.int32) for i in range(5)]
  clients = [matrices, [np.int32(2)] * 5,
             [np.float32(10 + i) for i in range(5)],
             [np.array([i, 0], np.int64) for i in range(5)],
             [np.float32(0)] * 5]
  m, steps, examples, seeds, malicious, slots = tff_slices.pack_slices(
      clients, shape, (2, 4))
  assert [list(s) for s in slots] == [[0, 2, 4], [1, 3, -1]]
  assert m[1].shape == (3, 2, 4) and (m[1][2] == -1).all()
  assert list(examples[0]) == [10, 12, 14] and list(steps[1]) == [2, 2, 0]
  assert seeds[1].shape == (3, 2) and examples[1][2] == 0
  with pytest.raises(ValueError):
    tff_slices.pack_slices([c + c for c in clients], shape, (2, 4))


def test_clients_with_state_train_their_round_in_one_call(tmp_path):
  # Per-client state comes back per client, which a split round would get
  # by training every slice twice: SCAFFOLD's rounds are not split.
  _, summary = final_weights(config("scaffold", "tff", rounds=1,
                                    clients_per_call=1), tmp_path)
  assert summary["tff_clients_per_call"] == 3
  assert summary["tff_clients_as"] == "one_per_client"


def test_binary_with_tff_backend_leaves_no_worker(tmp_path):
  out = tmp_path / "run"
  proc = subprocess.run(
      f"{sys.executable} -m simulations.federated --dataset=digits "
      f"--model=mlp --num_clients=6 --clients_per_round=2 --rounds=1 "
      f"--backend=tff --out_dir={out} 2>&1 | cat", shell=True, cwd=ROOT,
      timeout=400, capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 0, proc.stdout[-2000:]
  summary = json.loads((out / "summary.json").read_text())
  pids = summary["tff_worker_pids"]
  assert pids
  for pid in pids:
    assert not os.path.exists(f"/proc/{pid}"), f"worker {pid} left running"


def test_federated_simclr_backends_agree(tmp_path):
  from fedclf.ssl import SslConfig  # pylint: disable=g-import-not-at-top

  def ssl(backend):
    return dataclasses.replace(
        config("fedavg", backend, rounds=2), objective="simclr",
        ssl=SslConfig(method="simclr", projection_dim=16, hidden_dim=32,
                      projector_norm="none"), knn_train_examples=200)

  local, _ = final_weights(ssl("local"), tmp_path / "local")
  tff_state, summary = final_weights(ssl("tff"), tmp_path / "tff")
  assert "linear_probe_accuracy" in summary
  for a, b in zip(local.trainable, tff_state.trainable):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("algorithm", ["fedavg", "fedema"])
def test_federated_byol_backends_agree(tmp_path, algorithm):
  # BYOL's per-client target networks (client state) and FedEMA's previous
  # local models travel through TFF's client state like SCAFFOLD's.
  from fedclf.ssl import ByolParams  # pylint: disable=g-import-not-at-top
  from fedclf.ssl import SslConfig  # pylint: disable=g-import-not-at-top

  def byol(backend):
    return dataclasses.replace(
        config(algorithm, backend, rounds=3), objective="byol",
        ssl=SslConfig(method="byol", projection_dim=16, hidden_dim=32,
                      projector_norm="none",
                      params=ByolParams(predictor_hidden_dim=8)),
        knn_train_examples=200)

  local, _ = final_weights(byol("local"), tmp_path / "local")
  tff_state, summary = final_weights(byol("tff"), tmp_path / "tff")
  assert "linear_probe_accuracy" in summary
  for a, b in zip(local.trainable, tff_state.trainable):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def _wire_config(rounds):
  cfg = config("fedavg", "tff", rounds=rounds)
  # 1,200 digits over 6 clients: 3 clients' examples (~150 KB) are a large
  # share of a round's bytes if they crossed the wire.
  return dataclasses.replace(cfg, data=dataclasses.replace(
      cfg.data, train_limit=1200))


def test_round_sends_index_matrices_not_examples(tmp_path):
  from fedclf.federated import Simulation  # pylint: disable=g-import-not-at-top
  from fedclf.federated.communication import broadcast_bytes  # pylint: disable=g-import-not-at-top
  sim = Simulation(_wire_config(1), str(tmp_path), {})
  try:
    summary = sim.run()
  finally:
    sim.close()
  row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
  clients = row["clients_reported"]
  model = broadcast_bytes(sim.final_state)
  steps, width = sim.rounds.batch_shape
  matrices = clients * steps * width * 4  # int32 indices
  # One worker: the weights go down once (the broadcast to the clients
  # happens on the worker) and the mean comes back once; per client only
  # its index matrix and a few scalars.
  down = row["bytes/sent_to_workers"] - row["bytes/computations_to_workers"]
  assert abs(down - (model + matrices)) <= 0.1 * (model + matrices)
  assert abs(row["bytes/received_from_workers"] - model) <= 0.1 * model
  examples = row["examples"] * 8 * 8 * 4  # float32 8x8 images
  assert examples > 0.3 * (model + matrices)  # would have been caught
  assert summary["total_bytes_sent_to_workers"] == row[
      "bytes/sent_to_workers"]
  assert summary["total_bytes_received_from_workers"] == row[
      "bytes/received_from_workers"]


def test_rounds_reuse_the_traced_computations(tmp_path):
  from fedclf.federated import Simulation  # pylint: disable=g-import-not-at-top
  sim = Simulation(_wire_config(20), str(tmp_path), {})
  try:
    state = sim.rounds.initial_state()
    state, _ = sim.rounds.train_round(state, {}, 1)
    traces = sim.backend.traces
    compilations = sim.backend.runtime.traffic.compilations
    computation_bytes = set()
    for r in range(2, 21):
      state, row = sim.rounds.train_round(state, {}, r)
      computation_bytes.add(row["bytes/computations_to_workers"])
    assert sim.backend.traces == traces > 0
    assert sim.backend.runtime.traffic.compilations == compilations > 0
    assert len(computation_bytes) == 1  # the same computation every round
  finally:
    sim.close()


def test_worker_with_other_training_data_is_refused(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fedclf.errors import UserError  # pylint: disable=g-import-not-at-top
  from fedclf.federated import AlgorithmConfig  # pylint: disable=g-import-not-at-top
  from fedclf.federated import build_algorithm  # pylint: disable=g-import-not-at-top
  from fedclf.federated.backends import BACKENDS  # pylint: disable=g-import-not-at-top
  from fedclf.federated.backends import BackendSpec  # pylint: disable=g-import-not-at-top
  from fedclf.federated.backends import tff_data  # pylint: disable=g-import-not-at-top
  from fedclf.federated.backends import tff_workers  # pylint: disable=g-import-not-at-top

  def model_fn():
    return tf.keras.Sequential([tf.keras.layers.InputLayer((4,)),
                                tf.keras.layers.Dense(3)])

  rng = np.random.default_rng(0)
  x = rng.normal(size=(8, 4)).astype(np.float32)
  y = rng.integers(0, 3, size=8)
  # A stale copy on the worker: the right name and size, other contents.
  stale = tff_data.write_worker_data(str(tmp_path), x, y)
  np.zeros_like(x).tofile(stale.path("x.bin"))
  spec = BackendSpec(
      algorithm=build_algorithm("fedavg", AlgorithmConfig(local_batch_size=2)),
      model_fn=model_fn, x_train=x, y_train=y, batch_shape=(2, 2),
      clients_per_round=2, num_clients=2, seed=0,
      tff_data_dir=str(tmp_path))
  with pytest.raises(UserError, match="holds different training data"):
    BACKENDS.get("tff")(spec)
  assert not tff_workers.owned_workers()
