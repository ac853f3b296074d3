"""Helpers of the export and interpretation tests: tiny finished runs
(scikit-learn's 8x8 digits, the zoo CNN; a centralized and a federated
run, each with model.keras and its kind in summary.json) and running the
binaries."""

import fcntl
import os
import shutil
import subprocess
import sys
from typing import Callable

from fedclf.data import DataConfig
from fedclf.federated import AlgorithmConfig
from fedclf.federated import FederatedRunConfig
from fedclf.federated import run_federated
from fedclf.federated import SimulationConfig
from fedclf.partition import PartitionConfig
from fedclf.train.centralized import CentralizedConfig
from fedclf.train.centralized import run_centralized
from fedclf.train.loop import TrainConfig
from fedclf.train.optimizers import OptimizerConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DATA = DataConfig(name="digits", train_limit=600, test_limit=200)


def train_centralized(out_dir: str) -> str:
  """Three Adam epochs: ~90% test accuracy, enough for clear parity."""
  run_centralized(
      CentralizedConfig(
          data=DATA, model_name="cnn",
          train=TrainConfig(epochs=3, batch_size=32,
                            optimizer=OptimizerConfig(name="adam",
                                                      learning_rate=3e-3),
                            checkpoint_every=0),
          val_fraction=0.0),
      out_dir, {"test": "tiny centralized run"})
  assert os.path.exists(os.path.join(out_dir, "model.keras"))
  return out_dir


def train_federated(out_dir: str) -> str:
  """Two FedAvg rounds over 4 IID clients (GroupNorm config, as the
  McMahan runs record it; the CNN has no norm layers)."""
  simulation = SimulationConfig(
      algorithm="fedavg",
      algorithm_config=AlgorithmConfig(client_lr=0.05, local_epochs=1,
                                       local_batch_size=16),
      num_clients=4, clients_per_round=4, rounds=2, per_client_eval=0,
      checkpoint_every=1, parallel_clients=2, seed=1)
  run_federated(
      FederatedRunConfig(data=DATA, partitioner="iid",
                         partition=PartitionConfig(num_clients=4, seed=1),
                         model_name="cnn", simulation=simulation),
      out_dir, {"test": "tiny federated run"})
  assert os.path.exists(os.path.join(out_dir, "model.keras"))
  return out_dir


def session_dir(tmp_path_factory, name: str,
                build: Callable[[str], None]) -> str:
  """A folder `build` fills once per test session, shared by the
  pytest-xdist workers (each would otherwise train and export its own
  copy of the same tiny model)."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # the session's folder, above each worker's
  path = os.path.join(str(base), name)
  with open(path + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(os.path.join(path, ".done")):
      shutil.rmtree(path, ignore_errors=True)
      os.makedirs(path)
      build(path)
      open(os.path.join(path, ".done"), "w").close()
  return path


def centralized_run(tmp_path_factory) -> str:
  return session_dir(tmp_path_factory, "tiny_centralized", train_centralized)


def federated_run(tmp_path_factory) -> str:
  return session_dir(tmp_path_factory, "tiny_federated", train_federated)


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
  """`python -m module args` from the repository root, TF quiet."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)


def assert_one_error_line(proc: subprocess.CompletedProcess,
                          message: str) -> None:
  """Exit status 2, one 'error' line containing `message`, no traceback."""
  assert proc.returncode == 2, proc.stderr[-1000:]
  errors = [l for l in proc.stderr.splitlines() if "error" in l]
  assert len(errors) == 1 and message in errors[0], proc.stderr[-1000:]
  assert "Traceback" not in proc.stderr
