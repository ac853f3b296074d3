"""The run-folder contract: a tiny run of every kind writes its model and
its kind, and `load_trained_run` reloads the model and reproduces the
accuracy the run reported on the same data; old and odd folders are
one-line UserErrors."""

import json
import os
import shutil

import numpy as np
import pytest

from fedclf import federated
from fedclf.adapt import AdaptConfig
from fedclf.adapt import AdaptRunConfig
from fedclf.adapt import DannConfig
from fedclf.adapt import DomainLimits
from fedclf.adapt import federated_domain_config
from fedclf.adapt import FederatedAdaptConfig
from fedclf.adapt import run_adaptation
from fedclf.adapt import run_federated_adaptation
from fedclf.adapt import run_federated_uda
from fedclf.data import DataConfig
from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.models import build_classifier
from fedclf.models import ModelConfig
from fedclf.partition import PartitionConfig
from fedclf.results import RunRecorder
from fedclf.results.trained_run import load_classifier_run
from fedclf.results.trained_run import load_trained_run
from fedclf.results.trained_run import RUN_KINDS
from fedclf.results.trained_run import write_final_model
from fedclf.ssl import PretrainConfig
from fedclf.ssl import run_ssl_pretraining
from fedclf.ssl import SslConfig
from fedclf.ssl import SslRunConfig
from fedclf.ssl.evaluate import knn_accuracy
from fedclf.train import OptimizerConfig
from fedclf.train import TrainConfig
from fedclf.train.loop import predict_logits
from tests.export import tiny_runs

REAL_DATA = os.environ.get("FEDCLF_DATA_DIR", "")
DIGITS = DataConfig(name="digits", train_limit=300, test_limit=100)
SMALL_MLP = ModelConfig(width_multiplier=0.25)
DOMAIN_LIMITS = DomainLimits(train=160, test=100)
MOMENTUM = OptimizerConfig("momentum", 0.05)


def train_ssl_pretrain(out_dir: str) -> None:
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


def _tiny_simulation() -> federated.SimulationConfig:
  return federated.SimulationConfig(
      algorithm="fedavg",
      algorithm_config=federated.AlgorithmConfig(client_lr=0.05,
                                                 local_batch_size=32),
      num_clients=2, clients_per_round=2, rounds=1, per_client_eval=0,
      parallel_clients=2, checkpoint_every=0, seed=1)


def train_federated_ssl(out_dir: str) -> None:
  federated.run_federated(federated.FederatedRunConfig(
      data=DIGITS, partitioner="iid",
      partition=PartitionConfig(num_clients=2, seed=1), model_name="mlp",
      model=SMALL_MLP, simulation=_tiny_simulation(), objective="simclr",
      ssl=SslConfig(method="simclr", projection_dim=16, hidden_dim=32)),
      out_dir, {"test": "tiny federated_ssl run"})


def _tiny_adaptation(method: str) -> AdaptRunConfig:
  return AdaptRunConfig(
      source="mnist", target="usps", method=method, model_name="mlp",
      model=SMALL_MLP, limits=DOMAIN_LIMITS,
      adapt=AdaptConfig(
          train=TrainConfig(epochs=1, batch_size=32, optimizer=MOMENTUM),
          dann=DannConfig(domain_hidden=(16,))))


def train_domain_adaptation(out_dir: str) -> None:
  run_adaptation(_tiny_adaptation("source_only"), out_dir,
                 {"test": "tiny domain_adaptation run"})


def train_federated_domain_adaptation(out_dir: str) -> None:
  run_federated_uda(
      _tiny_adaptation("dann"),
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
    "centralized": (tiny_runs.train_centralized, False),
    "federated": (tiny_runs.train_federated, False),
    "federated_ssl": (train_federated_ssl, False),
    "ssl_pretrain": (train_ssl_pretrain, False),
    "domain_adaptation": (train_domain_adaptation, True),
    "federated_domain_adaptation": (train_federated_domain_adaptation, True),
    "federated_domain_mixture": (train_federated_domain_mixture, True),
}


def tiny_run(tmp_path_factory, kind: str) -> str:
  build, real_data = TINY_RUNS[kind]
  if real_data and not all(os.path.isdir(os.path.join(REAL_DATA, d))
                           for d in ("mnist", "usps")):
    pytest.skip("FEDCLF_DATA_DIR with the MNIST and USPS files is not set")
  return tiny_runs.session_dir(tmp_path_factory, f"tiny_{kind}", build)


def reproduced_accuracy(kind: str, run) -> float:
  """The run's headline accuracy recomputed from the reloaded model the way
  its trainer computed it."""
  ds = run.data()
  test = (ds.x_test, ds.y_test)
  if kind == "ssl_pretrain":
    return knn_accuracy(run.model, (ds.x_train, ds.y_train), test,
                        run.normalization, run.resolved["knn_k"])
  if kind == "federated_ssl":
    # Every training image is a kNN reference (knn_train_examples > 300),
    # with knn_accuracy's default k, as the simulation evaluates.
    return knn_accuracy(run.model, (ds.x_train, ds.y_train), test,
                        run.normalization)
  logits = predict_logits(run.model, ds.x_test, run.normalization)
  return float(np.mean(logits.argmax(-1) == ds.y_test))


def test_every_kind_has_a_tiny_run():
  assert set(TINY_RUNS) == set(RUN_KINDS)


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_run_writes_its_model_and_kind_and_reloads(kind, tmp_path_factory):
  run_dir = tiny_run(tmp_path_factory, kind)
  with open(os.path.join(run_dir, "summary.json")) as f:
    summary = json.load(f)
  assert summary["kind"] == kind
  expected_file = ("encoder.keras" if kind in ("ssl_pretrain", "federated_ssl")
                   else "model.keras")
  assert summary["model_file"] == expected_file
  assert os.path.getsize(os.path.join(run_dir, expected_file)) > 0
  run = load_trained_run(run_dir)
  assert run.kind == kind and run.is_classifier == (
      expected_file == "model.keras")
  assert run.reported_accuracy() is not None
  assert reproduced_accuracy(kind, run) == pytest.approx(
      run.reported_accuracy(), abs=1e-9)
  if not run.is_classifier:
    with pytest.raises(UserError, match="saved an encoder") as error:
      load_classifier_run(run_dir)
    assert "\n" not in str(error.value)


def _copy_with_summary(run_dir: str, out: str, **changes) -> str:
  shutil.copytree(run_dir, out)
  path = os.path.join(out, "summary.json")
  with open(path) as f:
    summary = json.load(f)
  for key, value in changes.items():
    if value is None:
      summary.pop(key, None)
    else:
      summary[key] = value
  with open(path, "w") as f:
    json.dump(summary, f)
  return out


def test_runs_without_a_kind_ask_for_a_rerun(tmp_path, tmp_path_factory):
  legacy = _copy_with_summary(tiny_run(tmp_path_factory, "centralized"),
                              str(tmp_path / "legacy"), kind=None)
  with pytest.raises(UserError, match="records no run kind") as error:
    load_trained_run(legacy)
  assert "rerun it" in str(error.value) and "\n" not in str(error.value)


def test_odd_run_folders_are_user_errors(tmp_path, tmp_path_factory):
  source = tiny_run(tmp_path_factory, "centralized")
  unknown = _copy_with_summary(source, str(tmp_path / "unknown"),
                               kind="quantum")
  with pytest.raises(UserError, match="'quantum' run"):
    load_trained_run(unknown)
  diverged = _copy_with_summary(source, str(tmp_path / "diverged"),
                                diverged_at_round=3)
  with pytest.raises(UserError, match="diverged at round 3"):
    load_trained_run(diverged)
  missing = _copy_with_summary(source, str(tmp_path / "missing"))
  os.remove(os.path.join(missing, "model.keras"))
  with pytest.raises(UserError, match="model.keras not found"):
    load_trained_run(missing)
  with pytest.raises(UserError, match="does not exist"):
    load_trained_run(str(tmp_path / "nowhere"))


def test_write_final_model_saves_then_records(tmp_path):
  recorder = RunRecorder(str(tmp_path), {"resolved": {}})
  model = build_classifier("mlp", (8, 8, 1), 10, SMALL_MLP)
  summary = {"test_accuracy": 0.5}
  returned = write_final_model(recorder, model, "centralized", summary,
                               Normalization((0.25,), (2.0,)))
  assert returned is summary and summary["kind"] == "centralized"
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert on_disk["model_file"] == "model.keras"
  assert on_disk["input_normalization"] == {"mean": [0.25], "std": [2.0]}
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
  with pytest.raises(ValueError, match="unknown run kind"):
    write_final_model(recorder, model, "adapted", {}, Normalization((0.0,),
                                                                   (1.0,)))
