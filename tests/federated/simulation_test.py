"""End-to-end tests of the federated simulation loop on the local backend
(tiny data: scikit-learn digits, an MLP, a few clients)."""

import dataclasses
import json
import os

import numpy as np
import pytest

from fedclf.data import DataConfig
from fedclf.errors import DivergenceError
from fedclf.errors import UserError
from fedclf.federated import AlgorithmConfig
from fedclf.federated import DpFedAvgParams
from fedclf.federated import FederatedRunConfig
from fedclf.federated import ReptileParams
from fedclf.federated import run_federated
from fedclf.federated import Simulation
from fedclf.federated.evaluation import ClassificationEvaluator
from fedclf.federated import SimulationConfig
from fedclf.partition import DirichletParams
from fedclf.partition import PartitionConfig
from fedclf.registry import ALGORITHMS
from fedclf.results import curves
from fedclf.results import tables


# Algorithms' own hyper-parameters in the tiny runs (the rest: defaults).
TINY_PARAMS = {
    "dp_fedavg": DpFedAvgParams(dp_noise_multiplier=0.1, dp_clip=1.0),
    "reptile": ReptileParams(personalization_steps=2),
}


# Algorithms that need another model than the tiny runs' MLP (FedBN: one
# with BatchNorm layers).
TINY_MODELS = {"fedbn": "cnn_gap"}


def tiny_config(algorithm="fedavg", rounds=2, **sim_overrides):
  alg = AlgorithmConfig(client_lr=0.05, local_epochs=1, local_batch_size=16)
  sim = dict(algorithm=algorithm, algorithm_config=alg,
             algorithm_params=TINY_PARAMS.get(algorithm), num_clients=8,
             clients_per_round=4, rounds=rounds, eval_every=1,
             per_client_eval=3, checkpoint_every=1, parallel_clients=2,
             seed=3)
  sim.update(sim_overrides)
  return FederatedRunConfig(
      data=DataConfig(name="digits", train_limit=400, test_limit=100),
      partitioner="dirichlet",
      partition=PartitionConfig(num_clients=sim["num_clients"], seed=3,
                                params=DirichletParams(dirichlet_alpha=0.5)),
      model_name=TINY_MODELS.get(algorithm, "mlp"),
      simulation=SimulationConfig(**sim))


def run(config, out_dir, resume=False):
  sim = Simulation(config, str(out_dir), {"test": True}, resume)
  summary = sim.run()
  return sim, summary


def read_rows(out_dir):
  with open(os.path.join(out_dir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS.names()))
def test_every_algorithm_runs_two_rounds(tmp_path, algorithm):
  sim, summary = run(tiny_config(algorithm), tmp_path)
  initial = sim.backend.initial_state(sim.objective.build_model())
  assert summary["rounds_run"] == 2
  assert 0.0 <= summary["final_test_accuracy"] <= 1.0
  assert np.isfinite(summary["final_test_loss"])
  rows = read_rows(tmp_path)
  assert [r["round"] for r in rows] == [1, 2]
  assert all(r["clients_reported"] == 4 for r in rows)
  moved = sum(float(np.abs(a - b).sum()) for a, b in
              zip(sim.final_state.trainable, initial.trainable))
  assert moved > 0
  for name in ("config.json", "summary.json", "partition.png"):
    assert os.path.exists(tmp_path / name)
  assert summary["client_execution"] == sim.backend.execution
  if algorithm == "dp_fedavg":
    assert summary["dp"]["epsilon"] > 0
  if algorithm == "reptile":
    assert "final_personal_query_accuracy_after" in summary


@pytest.mark.parametrize("client_batching", ["on", "off"])
def test_resumed_run_matches_uninterrupted(tmp_path, caplog,
                                           client_batching):
  # SCAFFOLD keeps per-client state and dropout skips clients: both must be
  # restored exactly for the weights to match, with the clients trained
  # batched or in replicas.
  full = tiny_config("scaffold", rounds=4, client_dropout=0.25,
                     client_batching=client_batching)
  sim_a, summary_a = run(full, tmp_path / "a")
  first = dataclasses.replace(
      full, simulation=dataclasses.replace(full.simulation, rounds=3))
  run(first, tmp_path / "b")
  # The newest checkpoint is unreadable: the resumed run starts from round
  # 2's (with a warning) and replays round 3, whose row it logs again.
  checkpoints = tmp_path / "b" / "checkpoints"
  with np.load(checkpoints / "round_00003.npz") as data:
    stored = json.loads(str(data["__setting__"]))["setting"]
  assert stored == {"test": True}  # the run's flags (see `run`)
  with open(checkpoints / "round_00003.npz", "r+b") as f:
    f.truncate(1000)
  with caplog.at_level("WARNING"):
    sim_b, summary_b = run(full, tmp_path / "b", resume=True)
  assert "cannot read checkpoint" in caplog.text
  assert "round_00003.npz" in caplog.text
  for a, b in zip(sim_a.final_state.trainable, sim_b.final_state.trainable):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert [r["round"] for r in read_rows(tmp_path / "b")] == [1, 2, 3, 4]
  assert summary_b["final_test_accuracy"] == pytest.approx(
      summary_a["final_test_accuracy"])


def test_parallel_slots_do_not_change_the_result(tmp_path):
  one, _ = run(tiny_config(parallel_clients=1), tmp_path / "one")
  three, _ = run(tiny_config(parallel_clients=3), tmp_path / "three")
  for a, b in zip(one.final_state.trainable, three.final_state.trainable):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_client_dropout_and_stragglers_are_logged(tmp_path):
  run(tiny_config(rounds=4, client_dropout=0.5, straggler_fraction=0.5),
      tmp_path)
  rows = read_rows(tmp_path)
  reported = [r["clients_reported"] for r in rows]
  assert all(r["clients_sampled"] == 4 for r in rows)
  assert min(reported) < 4  # seed 3 drops some clients
  assert sum(r["stragglers"] for r in rows) > 0


def test_divergence_names_round_and_keeps_checkpoint(tmp_path):
  config = tiny_config(rounds=3)
  run(config, tmp_path)  # a good run leaves checkpoints
  bad = dataclasses.replace(config, simulation=dataclasses.replace(
      config.simulation, rounds=6, algorithm_config=dataclasses.replace(
          config.simulation.algorithm_config, client_lr=1e9)))
  with pytest.raises(DivergenceError, match=r"round 4 .*checkpoint"):
    run(bad, tmp_path, resume=True)
  assert os.path.exists(tmp_path / "checkpoints" / "round_00003.npz")


def test_finite_but_exploding_loss_stops_at_the_ceiling(tmp_path):
  # lr 5 keeps the MLP's loss finite but far above any sane value, the
  # case the NaN/Inf check alone lets run on with a dead model.
  config = tiny_config(rounds=3, max_train_loss=50.0)
  config = dataclasses.replace(config, simulation=dataclasses.replace(
      config.simulation, algorithm_config=dataclasses.replace(
          config.simulation.algorithm_config, client_lr=5.0)))
  with pytest.raises(DivergenceError, match=r"round \d+ .*max_train_loss"):
    run(config, tmp_path)
  # The outcome is recorded, so a grid skips the run and its table says so.
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["diverged_at_round"] == summary["rounds_run"] + 1
  assert "max_train_loss" in summary["divergence"]
  table = tables.seed_table(tables.load_runs(str(tmp_path)), "lr grid")
  assert "diverged at round" in table
  assert f"| {summary['diverged_at_round']} |" in table
  curves.plot_seed_bands({"lr 5": [str(tmp_path)]},
                         str(tmp_path / "bands.png"), "lr grid")
  assert (tmp_path / "bands.png").stat().st_size > 0


def test_unit_input_scaling_reaches_both_federated_and_centralized(tmp_path):
  config = dataclasses.replace(tiny_config(rounds=1), centralized_epochs=1,
                               input_scaling="unit")
  summary = run_federated(config, str(tmp_path), {})
  unit = {"mean": [0.0], "std": [1.0]}
  assert json.loads((tmp_path / "summary.json").read_text())[
      "normalization"] == unit
  central = json.loads((tmp_path / "centralized" / "summary.json")
                       .read_text())
  assert central["normalization"] == unit
  assert summary["final_test_accuracy"] > 0.0
  with pytest.raises(UserError, match="input_scaling"):
    dataclasses.replace(config, input_scaling="minmax").validate()


def test_ctrl_c_inside_a_tensorflow_op_still_checkpoints(tmp_path,
                                                        monkeypatch):
  # Seen in CI: SIGINT during a tf.data iterator surfaced as pybind11's
  # RuntimeError naming KeyboardInterrupt, and the run died without saving.
  evaluate = ClassificationEvaluator.evaluate

  def interrupted_at_round_3(self, state, round_num):
    if round_num == 3:
      raise RuntimeError("pybind11::error_already_set: MISMATCH of original "
                         "and normalized active exception types: ORIGINAL "
                         "_NotOkStatusException REPLACED BY KeyboardInterrupt")
    return evaluate(self, state, round_num)

  monkeypatch.setattr(ClassificationEvaluator, "evaluate", interrupted_at_round_3)
  config = tiny_config(rounds=5, checkpoint_every=100)
  with pytest.raises(KeyboardInterrupt):
    run(config, tmp_path)
  assert os.path.exists(tmp_path / "checkpoints" / "round_00003.npz")
  # Round 3 trained but was not evaluated; the resumed run evaluates it, so
  # its metrics match an uninterrupted run's row for row.
  assert read_rows(tmp_path)[-1]["evaluation_interrupted"] == 1
  monkeypatch.setattr(ClassificationEvaluator, "evaluate", evaluate)
  resumed, _ = run(config, tmp_path, resume=True)
  whole, _ = run(config, tmp_path / "whole")
  got, want = read_rows(tmp_path), read_rows(tmp_path / "whole")
  assert [r["round"] for r in got] == [1, 2, 3, 4, 5]
  assert not any("evaluation_interrupted" in r for r in got)
  for key in ("test_accuracy", "test_loss", "train_loss"):
    np.testing.assert_allclose([r[key] for r in got],
                               [r[key] for r in want], rtol=1e-5)
  # Any other RuntimeError is a bug and keeps its traceback.
  def broken(self, state, round_num):
    raise RuntimeError("unrelated")

  monkeypatch.setattr(ClassificationEvaluator, "evaluate", broken)
  with pytest.raises(RuntimeError, match="unrelated"):
    run(config, tmp_path / "other")


def test_target_accuracy_and_centralized_comparison(tmp_path):
  config = dataclasses.replace(
      tiny_config(rounds=3, target_accuracy=0.05, stop_at_target=True),
      centralized_epochs=1)
  summary = run_federated(config, str(tmp_path), {})
  assert summary["rounds_to_target"] == 1
  assert summary["rounds_run"] == 1
  # Resuming a run that stopped at its target does not train on.
  _, again = run(config, tmp_path, resume=True)
  assert again["rounds_run"] == 1
  assert [r["round"] for r in read_rows(tmp_path)] == [1]
  assert 0.0 <= summary["centralized_test_accuracy"] <= 1.0
  assert os.path.exists(tmp_path / "centralized" / "summary.json")


def test_nonfinite_client_is_dropped_and_model_stays_finite(tmp_path):
  sim = Simulation(tiny_config(rounds=3, clients_per_round=8), str(tmp_path),
                   {})
  poisoned = sim.clients[0]
  x = sim.backend.x.numpy()
  x[poisoned] = np.nan
  sim.backend.x.assign(x)
  summary = sim.run()
  rows = read_rows(tmp_path)
  assert all(r["clients_nonfinite"] == 1 for r in rows)
  assert all(np.isfinite(w).all() for w in sim.final_state.trainable)
  assert np.isfinite(summary["final_test_loss"])


@pytest.mark.parametrize("method",
                         ["simclr", "simsiam", "barlow_twins", "vicreg",
                          "byol"])
def test_federated_ssl_objective(tmp_path, method):
  from fedclf.ssl import SimSiamParams  # pylint: disable=g-import-not-at-top
  from fedclf.ssl import SslConfig  # pylint: disable=g-import-not-at-top
  params = SimSiamParams(predictor_hidden_dim=8) if method == "simsiam" else (
      None)
  config = dataclasses.replace(
      tiny_config(rounds=2), objective=method,
      ssl=SslConfig(method=method, projection_dim=16, hidden_dim=32,
                    params=params), knn_train_examples=200)
  sim, summary = run(config, tmp_path)
  assert summary["objective"] == method
  assert 0.0 <= summary["linear_probe_accuracy"] <= 1.0
  assert 0.0 <= summary["final_knn_accuracy"] <= 1.0
  # Encoder and heads weights are what the server aggregates.
  assert len(sim.final_state.trainable) == len(
      sim.eval_model.trainable_variables)
