"""One tiny run per adaptation method, DANN's resume and schedules, seeds,
few-shot selection and the federated run across domains."""

import dataclasses
import json
import os

import numpy as np
import pytest

from fedclf import federated
from fedclf.adapt import AdaptationTask
from fedclf.adapt import AdaptConfig
from fedclf.adapt import AdaptRunConfig
from fedclf.adapt import CdanParams
from fedclf.adapt import DannParams
from fedclf.adapt import DomainLimits
from fedclf.adapt import federated_domain_config
from fedclf.adapt import few_shot_indices
from fedclf.adapt import FinetuneParams
from fedclf.adapt import MddParams
from fedclf.adapt import run_adaptation
from fedclf.adapt import run_adaptation_seeds
from fedclf.adapt import run_federated_adaptation
from fedclf.adapt.adversarial_training import AnnealedLearningRate
from fedclf.errors import UserError
from fedclf.models import ModelConfig
from fedclf.registry import ADAPTATION_METHODS
from fedclf.results import RunRecorder
from fedclf.train import OptimizerConfig
from fedclf.train import TrainConfig
from tests.adapt.resume_helpers import full_and_resumed
from tests.ctrl_c import CtrlCAfterRow
from tests.ctrl_c import CtrlCAt
from tests.ctrl_c import rows_without_clock

REAL_DATA = os.environ.get("FEDCLF_DATA_DIR", "")
pytestmark = pytest.mark.skipif(
    not all(os.path.isdir(os.path.join(REAL_DATA, d))
            for d in ("mnist", "usps", "cifar10")),
    reason="FEDCLF_DATA_DIR with the real files is not set")

SUMMARY_KEYS = ("target_accuracy", "source_accuracy", "target_macro_f1",
                "source_macro_f1", "method", "source", "target",
                "test_accuracy", "target_confusion_matrix", "train_seconds")


TINY_PARAMS = {
    "dann": DannParams(dann_hidden=(32,)),
    # The mlp has no convolutions: CDAN reads its encoder output (100 x 10
    # columns, the full map).
    "cdan": CdanParams(cdan_hidden=(32,)),
    "mdd": MddParams(mdd_hidden=(16,)),
    "finetune": FinetuneParams(target_labels_per_class=3, finetune_epochs=1,
                               finetune_lr=0.05, finetune_batch_size=16),
}


def tiny(method, epochs=1, params=None):
  momentum = OptimizerConfig("momentum", 0.05)
  return AdaptRunConfig(
      source="mnist", target="usps", method=method, model_name="mlp",
      model=ModelConfig(width_multiplier=0.5),
      limits=DomainLimits(train=300, test=200),
      adapt=AdaptConfig(
          train=TrainConfig(epochs=epochs, batch_size=32, optimizer=momentum),
          params=params or TINY_PARAMS.get(method)))


@pytest.mark.parametrize("method", ["source_only", "target_oracle", "dann",
                                    "finetune", "cdan", "mdd"])
def test_tiny_run_per_method(method, tmp_path):
  assert method in ADAPTATION_METHODS
  summary = run_adaptation(tiny(method), str(tmp_path), {"method": method})
  for key in SUMMARY_KEYS:
    assert key in summary, key
  assert summary["method"] == method and summary["target"] == "usps"
  # Ten steps on 300 digits: clear of chance (0.1), nothing more.
  assert summary["source_accuracy"] > 0.15 or method == "target_oracle"
  assert summary["target_accuracy"] > 0.12
  assert summary["test_accuracy"] == summary["target_accuracy"]
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert on_disk["target_accuracy"] == summary["target_accuracy"]
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["config"]["resolved"]["method"] == method
  rows = [json.loads(line) for line in
          (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert "target_accuracy" in rows[-1]
  for name in ("confusion_matrix.png", "model.keras"):
    assert (tmp_path / name).stat().st_size > 0
  if method in ("dann", "cdan", "mdd"):
    metric = "auxiliary_agreement" if method == "mdd" else "domain_accuracy"
    assert any(metric in r and "target_test_accuracy" in r for r in rows)
    assert 0.0 <= summary["final_lambda"] <= 1.0
    assert summary["model_selection"] == "last_epoch"
    assert summary["steps_per_epoch"] == 10  # 300 source images, 32 a step
  if method == "cdan":
    assert summary["cdan_map"] == "full" and summary["cdan_map_dim"] == 1000
  if method == "finetune":
    assert summary["target_labelled_examples"] == 30
    assert 0.0 <= summary["source_model_target_accuracy"] <= 1.0
    assert any("finetune_train_loss" in r for r in rows)


def test_dann_resume_replays_the_uninterrupted_run(tmp_path):
  full, resumed = full_and_resumed(tiny("dann", epochs=2), tmp_path, "dann")
  assert resumed["epochs_run"] == 2
  assert resumed["target_accuracy"] == pytest.approx(full["target_accuracy"])
  assert resumed["final_domain_loss"] == pytest.approx(
      full["final_domain_loss"], rel=1e-4)


def test_dann_resumed_after_training_finished_keeps_final_metrics(tmp_path):
  # As a run killed while evaluating resumes: no epoch is run again.
  config = tiny("dann", epochs=1)
  first = run_adaptation(config, str(tmp_path), {})
  again = run_adaptation(config, str(tmp_path), {}, resume=True)
  for key in ("final_domain_accuracy", "final_domain_loss", "final_lambda"):
    assert again[key] == first[key], key


def test_dann_annealing_schedule():
  schedule = AnnealedLearningRate(0.01, 100, 10.0, 0.75)
  assert float(schedule(0)) == pytest.approx(0.01)
  assert float(schedule(100)) == pytest.approx(0.01 / 11 ** 0.75)
  assert float(schedule(500)) == pytest.approx(float(schedule(100)))
  with pytest.raises(UserError, match="replaces the lr schedule"):
    bad = tiny("dann", params=DannParams(dann_hidden=(8,),
                                         dann_anneal_lr=True))
    bad = dataclasses.replace(bad, adapt=dataclasses.replace(
        bad.adapt, train=dataclasses.replace(
            bad.adapt.train, optimizer=OptimizerConfig(
                "momentum", 0.01, schedule="cosine"))))
    run_adaptation(bad, "/nonexistent-not-written", {})


def test_seeds_summarized(tmp_path):
  summary = run_adaptation_seeds(tiny("source_only"), [0, 1], str(tmp_path),
                                 {})
  assert summary["seeds"] == [0, 1] and len(summary["per_seed"]) == 2
  values = [row["target_accuracy"] for row in summary["per_seed"]]
  assert summary["target_accuracy_mean"] == pytest.approx(np.mean(values))
  assert summary["target_accuracy_std"] == pytest.approx(np.std(values))
  for seed in (0, 1):
    assert (tmp_path / f"seed_{seed}" / "summary.json").exists()
  with pytest.raises(UserError, match="distinct"):
    run_adaptation_seeds(tiny("source_only"), [1, 1], str(tmp_path), {})


def test_few_shot_indices():
  labels = np.repeat(np.arange(4), [5, 1, 5, 5])
  chosen = few_shot_indices(labels, 3, 4, seed=0)
  assert np.bincount(labels[chosen]).tolist() == [3, 1, 3, 3]
  np.testing.assert_array_equal(chosen, few_shot_indices(labels, 3, 4, 0))
  assert not np.array_equal(chosen, few_shot_indices(labels, 3, 4, 1))
  with pytest.raises(UserError, match=">= 1"):
    few_shot_indices(labels, 0, 4, 0)


def test_config_errors():
  with pytest.raises(UserError, match="finetune needs"):
    dataclasses.replace(tiny("finetune"), adapt=AdaptConfig(
        params=FinetuneParams(target_labels_per_class=0))).validate()
  with pytest.raises(UserError, match="learning rate must be > 0"):
    dataclasses.replace(tiny("finetune"), adapt=AdaptConfig(
        params=FinetuneParams(finetune_lr=0.0))).validate()
  with pytest.raises(UserError, match="dann domain classifier"):
    dataclasses.replace(tiny("dann"), adapt=AdaptConfig(
        params=DannParams(dann_hidden=(0,)))).validate()
  # A method's params belong to it alone.
  with pytest.raises(UserError, match="adaptation method source_only takes "
                     "NoParams, got DannParams"):
    tiny("source_only", params=DannParams()).validate()


def test_params_registered_and_resolved():
  assert ADAPTATION_METHODS.params_class("dann") is DannParams
  assert ADAPTATION_METHODS.params_class("finetune") is FinetuneParams
  config = dataclasses.replace(tiny("dann"), adapt=AdaptConfig())
  assert config.with_resolved_params().adapt.params == DannParams()
  # finetune's second stage follows the main run's optimizer and seed.
  train = TrainConfig(optimizer=OptimizerConfig(
      "nesterov", 0.1, momentum=0.8, weight_decay=1e-4, schedule="cosine"),
                      label_smoothing=0.1, checkpoint_every=2, seed=3)
  assert FinetuneParams(finetune_lr=0.002).train_config(train) == TrainConfig(
      epochs=20, batch_size=32, optimizer=OptimizerConfig(
          "nesterov", 0.002, momentum=0.8, weight_decay=1e-4),
      label_smoothing=0.1, checkpoint_every=2, seed=3)


def test_federated_across_domains_reports_each_domain(tmp_path):
  simulation = federated.SimulationConfig(
      algorithm="fedavg",
      algorithm_config=federated.AlgorithmConfig(client_lr=0.05,
                                                 local_batch_size=32),
      num_clients=4, clients_per_round=4, rounds=2, per_client_eval=2,
      parallel_clients=2, checkpoint_every=0)
  config = federated_domain_config(
      ("mnist", "usps"), simulation, "mlp", ModelConfig(width_multiplier=0.5),
      limits=DomainLimits(train=400, test=200))
  summary = run_federated_adaptation(config, str(tmp_path), {})
  assert summary["domains"] == ["mnist", "usps"]
  assert summary["domain_clients"] == {"mnist": 2, "usps": 2}
  for name in ("mnist", "usps"):
    assert 0.0 <= summary["domain_accuracy"][name] <= 1.0
  assert summary["domain_accuracy"]["mnist"] > 0.3
  assert summary["rounds_run"] == 2
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert on_disk["domain_accuracy"] == summary["domain_accuracy"]
  with pytest.raises(UserError, match="two or more distinct domains"):
    federated_domain_config(("mnist", "mnist"), simulation)



def test_dann_resume_after_a_kill_ends_with_the_uninterrupted_weights(
    tmp_path):
  config = tiny("dann", epochs=3)
  pair = config.load_pair()

  def task(recorder, resume):
    return AdaptationTask(pair, config.model_name, config.model,
                          config.adapt, recorder, str(tmp_path / "ckpt"),
                          resume)

  full = ADAPTATION_METHODS.get("dann")(dataclasses.replace(
      task(None, False), checkpoint_dir=None))
  with pytest.raises(KeyboardInterrupt):
    ADAPTATION_METHODS.get("dann")(task(CtrlCAt(2), False))
  resumed = ADAPTATION_METHODS.get("dann")(task(None, True))
  assert resumed.epochs_run == 3
  for key in ("final_domain_loss", "final_domain_accuracy", "final_lambda"):
    assert resumed.details[key] == full.details[key], key
  for a, b in zip(full.model.get_weights(), resumed.model.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_dann_resumed_run_logs_each_epoch_row_once(tmp_path):
  config = tiny("dann", epochs=3)
  pair = config.load_pair()

  def dann(recorder, ckpt, resume=False):
    return ADAPTATION_METHODS.get("dann")(AdaptationTask(
        pair, config.model_name, config.model, config.adapt, recorder,
        str(ckpt), resume))

  full = RunRecorder(str(tmp_path / "full"), {})
  dann(full, tmp_path / "full" / "ckpt")
  cut = tmp_path / "cut"
  # Killed after epoch 2's row, before its checkpoint.
  with pytest.raises(KeyboardInterrupt):
    dann(CtrlCAfterRow(cut, 2), cut / "ckpt")
  resumed = RunRecorder(str(cut), {}, resume=True)
  dann(resumed, cut / "ckpt", resume=True)
  assert [r["epoch"] for r in resumed.read_metrics()] == [1, 2, 3]
  assert rows_without_clock(resumed) == rows_without_clock(full)
