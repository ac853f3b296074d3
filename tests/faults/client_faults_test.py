"""Faulty clients: an update that becomes NaN or Inf, or local training
that raises, drops that client from the round (logged and counted in
metrics.jsonl); the global model stays finite and the other clients train."""

import json
import os

import numpy as np
import psutil
import pytest
import tensorflow as tf

from fedclf.data import DataConfig
from fedclf.federated import Algorithm
from fedclf.federated import AlgorithmConfig
from fedclf.federated import FederatedRunConfig
from fedclf.federated import LocalSGD
from fedclf.federated import Simulation
from fedclf.federated import SimulationConfig
from fedclf.federated import simulation as simulation_lib
from fedclf.federated.client_work import masked_loss_and_correct
from fedclf.partition import PartitionConfig
from tests.federated.simulation_runs import poison_examples
from tests.federated.simulation_runs import with_own_tff_data


def tiny_config(rounds=2, backend="local"):
  return FederatedRunConfig(
      data=DataConfig(name="digits", train_limit=240, test_limit=60),
      partitioner="iid",
      partition=PartitionConfig(num_clients=6, seed=1),
      model_name="mlp",
      simulation=SimulationConfig(
          algorithm="fedavg",
          algorithm_config=AlgorithmConfig(client_lr=0.05,
                                           local_batch_size=20),
          num_clients=6, clients_per_round=6, rounds=rounds,
          per_client_eval=0, checkpoint_every=0, parallel_clients=2,
          backend=backend, seed=1))


def poison(sim, client, value):
  """Replaces client `client`'s training images by `value`."""
  poison_examples(sim, sim.clients[client], value)


def workers_started_by(test_name):
  """Live TFF worker processes started while `test_name` ran."""
  found = []
  for proc in psutil.process_iter(["name"]):
    try:
      if proc.info["name"] == "worker_binary" and test_name in proc.environ(
      ).get("PYTEST_CURRENT_TEST", ""):
        found.append(proc.pid)
    except psutil.Error:
      pass
  return found


def rows(out_dir):
  with open(os.path.join(out_dir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_update_is_dropped(tmp_path, value):
  sim = Simulation(tiny_config(), str(tmp_path), {})
  poison(sim, 2, value)
  summary = sim.run()
  for row in rows(tmp_path):
    assert row["clients_nonfinite"] == 1 and row["clients_failed"] == 0
  assert all(np.isfinite(w).all() for w in sim.final_state.trainable)
  assert np.isfinite(summary["final_test_loss"])


def checked_objective(model, images, labels, mask, seed=None):
  # A client work that validates its data, as a plugin might: it raises at
  # run time (tf.errors.InvalidArgumentError) on a client with bad images.
  images = tf.debugging.assert_all_finite(images, "client images are bad")
  return masked_loss_and_correct(model, images, labels, mask, seed)


def checked_fedavg(name, config, params=None):
  del name, params  # Unused: FedAvg has no hyper-parameters of its own.
  return Algorithm("fedavg", LocalSGD(config).with_objective(
      checked_objective), config.server)


@pytest.mark.parametrize("backend", ["local", "tff"])
def test_client_whose_training_raises_is_dropped(
    tmp_path, tmp_path_factory, monkeypatch, caplog, backend):
  monkeypatch.setattr(simulation_lib, "build_algorithm", checked_fedavg)
  cfg = with_own_tff_data(tiny_config(
      rounds=2 if backend == "local" else 1, backend=backend),
                          tmp_path_factory.mktemp("tff_data"))
  sim = Simulation(cfg, str(tmp_path), {})
  initial = [v.numpy() for v in sim.eval_model.trainable_variables]
  poison(sim, 3, np.nan)
  with caplog.at_level("WARNING"):
    try:
      sim.run()
    finally:
      sim.close()
  # Neither the run nor the probing of the failing client leaves a worker.
  assert not workers_started_by(f"raises_is_dropped[{backend}]")
  assert "local training of client 3 raised" in caplog.text
  assert "client images are bad" in caplog.text
  for row in rows(tmp_path):
    assert row["clients_failed"] == 1 and row["clients_nonfinite"] == 0
    assert row["clients_reported"] == 6
  assert all(np.isfinite(w).all() for w in sim.final_state.trainable)
  # The other five clients still trained: the model moved.
  assert any(not np.allclose(a, b) for a, b in
             zip(initial, sim.final_state.trainable))


def test_every_client_raising_stops_the_run(tmp_path, monkeypatch):
  monkeypatch.setattr(simulation_lib, "build_algorithm", checked_fedavg)
  sim = Simulation(tiny_config(), str(tmp_path), {})
  sim.backend.x.assign(np.full(sim.backend.x.shape, np.nan, np.float32))
  with pytest.raises(RuntimeError, match="local training of every client"):
    sim.run()
