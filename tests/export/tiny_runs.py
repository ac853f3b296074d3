"""Helpers of the export, interpretation and run-folder tests: tiny
finished runs and running the binaries.

The centralized and federated runs (scikit-learn's 8x8 digits, the zoo
CNN) are the ones exported and explained; `TINY_RUNS` adds a tiny run of
every other kind of `fedclf.results.trained_run` (the domain-adaptation
kinds need the MNIST and USPS files under $FEDCLF_DATA_DIR)."""

import fcntl
import os
import shutil
from typing import Any, Callable

import pytest

from fedclf.adapt import AdaptConfig
from fedclf.adapt import AdaptRunConfig
from fedclf.adapt import DannParams
from fedclf.adapt import DomainLimits
from fedclf.adapt import federated_domain_config
from fedclf.adapt import FederatedAdaptConfig
from fedclf.adapt import run_adaptation
from fedclf.adapt import run_federated_adaptation
from fedclf.adapt import run_federated_uda
from fedclf.data import DataConfig
from fedclf.federated import AlgorithmConfig
from fedclf.federated import FederatedRunConfig
from fedclf.federated import run_federated
from fedclf.federated import SimulationConfig
from fedclf.models import ModelConfig
from fedclf.partition import PartitionConfig
from fedclf.ssl import PretrainConfig
from fedclf.ssl import run_ssl_pretraining
from fedclf.ssl import SslConfig
from fedclf.ssl import SslRunConfig
from fedclf.train.centralized import CentralizedConfig
from fedclf.train.centralized import run_centralized
from fedclf.train.loop import TrainConfig
from fedclf.train.optimizers import OptimizerConfig

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


REAL_DATA = os.environ.get("FEDCLF_DATA_DIR", "")
DIGITS = DataConfig(name="digits", train_limit=300, test_limit=100)
SMALL_MLP = ModelConfig(width_multiplier=0.25)
DOMAIN_LIMITS = DomainLimits(train=160, test=100)
MOMENTUM = OptimizerConfig("momentum", 0.05)


def train_ssl_pretrain(out_dir: str) -> None:
  """One SimCLR epoch of a small MLP, a one-epoch linear probe."""
  adam = OptimizerConfig("adam", 1e-2)
  run_ssl_pretraining(SslRunConfig(
      data=DIGITS, model_name="mlp", model=SMALL_MLP,
      ssl=SslConfig(method="simclr", projection_dim=16, hidden_dim=32),
      pretrain=PretrainConfig(epochs=1, batch_size=64,
                              optimizer=OptimizerConfig("adam", 1e-3)),
      probe=TrainConfig(epochs=1, batch_size=64, optimizer=adam,
                        checkpoint_every=0),
      knn_k=5, label_fractions=(),
      embedding_points=0), out_dir, {"test": "tiny ssl_pretrain run"})


def _tiny_simulation() -> SimulationConfig:
  return SimulationConfig(
      algorithm="fedavg",
      algorithm_config=AlgorithmConfig(client_lr=0.05,
                                                 local_batch_size=32),
      num_clients=2, clients_per_round=2, rounds=1, per_client_eval=0,
      parallel_clients=2, checkpoint_every=0, seed=1)


def train_federated_ssl(out_dir: str) -> None:
  run_federated(FederatedRunConfig(
      data=DIGITS, partitioner="iid",
      partition=PartitionConfig(num_clients=2, seed=1), model_name="mlp",
      model=SMALL_MLP, simulation=_tiny_simulation(), objective="simclr",
      ssl=SslConfig(method="simclr", projection_dim=16, hidden_dim=32)),
      out_dir, {"test": "tiny federated_ssl run"})


def _tiny_adaptation(method: str, params: Any = None) -> AdaptRunConfig:
  return AdaptRunConfig(
      source="mnist", target="usps", method=method, model_name="mlp",
      model=SMALL_MLP, limits=DOMAIN_LIMITS,
      adapt=AdaptConfig(
          train=TrainConfig(epochs=1, batch_size=32, optimizer=MOMENTUM),
          params=params))


def train_domain_adaptation(out_dir: str) -> None:
  run_adaptation(_tiny_adaptation("source_only"), out_dir,
                 {"test": "tiny domain_adaptation run"})


def train_federated_domain_adaptation(out_dir: str) -> None:
  run_federated_uda(
      _tiny_adaptation("dann", DannParams(dann_hidden=(16,))),
      FederatedAdaptConfig(source_clients=1, target_clients=1,
                           clients_per_round=2, rounds=1,
                           local_batch_size=32, client_lr=0.05,
                           checkpoint_every=0),
      out_dir, {"test": "tiny federated_domain_adaptation run"})


def train_federated_domain_mixture(out_dir: str) -> None:
  run_federated_adaptation(
      federated_domain_config(("mnist", "usps"), _tiny_simulation(), "mlp",
                              SMALL_MLP, limits=DOMAIN_LIMITS),
      out_dir, {"test": "tiny federated_domain_mixture run"})


# kind -> (builds a tiny run into a folder, needs MNIST and USPS files).
TINY_RUNS = {
    "centralized": (train_centralized, False),
    "federated": (train_federated, False),
    "federated_ssl": (train_federated_ssl, False),
    "ssl_pretrain": (train_ssl_pretrain, False),
    "domain_adaptation": (train_domain_adaptation, True),
    "federated_domain_adaptation": (train_federated_domain_adaptation, True),
    "federated_domain_mixture": (train_federated_domain_mixture, True),
}


def tiny_run(tmp_path_factory, kind: str) -> str:
  """The session's tiny run of `kind` (skips without the data it needs)."""
  build, real_data = TINY_RUNS[kind]
  if real_data and not all(os.path.isdir(os.path.join(REAL_DATA, d))
                           for d in ("mnist", "usps")):
    pytest.skip("FEDCLF_DATA_DIR with the MNIST and USPS files is not set")
  return session_dir(tmp_path_factory, f"tiny_{kind}", build)
