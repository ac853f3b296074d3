"""End-to-end: a tiny pretrain + evaluation run per registered method, and
the binary (a tiny run, and bad flags giving one line and exit status 2)."""

import dataclasses
import json
import os

import pytest

from fedclf.data import DataConfig
from fedclf.models import ModelConfig
from fedclf.registry import SSL_METHODS
from fedclf.ssl import PretrainConfig
from fedclf.ssl import run_ssl_pretraining
from fedclf.ssl import ByolParams
from fedclf.ssl import SimSiamParams
from fedclf.ssl import SslConfig
from fedclf.ssl import SslRunConfig
from fedclf.train import OptimizerConfig
from tests.binary_batch import assert_one_error_line
from tests.binary_batch import run_commands
from fedclf.train import TrainConfig

SUMMARY_KEYS = ("linear_probe_accuracy", "knn_accuracy",
                "random_init_linear_probe_accuracy",
                "random_init_knn_accuracy", "finetune_accuracy_10",
                "supervised_accuracy_10", "labelled_examples_10",
                "final_ssl_loss", "pretrain_seconds")

def tiny_config(method):
  adam = OptimizerConfig("adam", 1e-2, schedule="cosine")
  return SslRunConfig(
      data=DataConfig("digits", train_limit=300, test_limit=200),
      model_name="mlp",
      model=ModelConfig(width_multiplier=0.25),
      ssl=SslConfig(method=method, projection_dim=16, hidden_dim=32,
                    params={"simsiam": SimSiamParams(predictor_hidden_dim=8),
                            "byol": ByolParams(predictor_hidden_dim=8)}.get(
                                method)),
      pretrain=PretrainConfig(epochs=1, batch_size=64,
                              optimizer=OptimizerConfig("adam", 1e-3)),
      probe=TrainConfig(epochs=3, batch_size=64, optimizer=adam,
                        checkpoint_every=0),
      knn_k=5,
      label_fractions=(0.1,),
      finetune=TrainConfig(epochs=1, batch_size=32, optimizer=adam,
                           checkpoint_every=0),
      embedding_points=60)

@pytest.mark.parametrize("method", SSL_METHODS.names())
def test_tiny_run_writes_results(method, tmp_path):
  summary = run_ssl_pretraining(tiny_config(method), str(tmp_path),
                                {"method": method})
  for key in SUMMARY_KEYS:
    assert key in summary, key
  for key in SUMMARY_KEYS[:6]:
    assert 0.0 <= summary[key] <= 1.0
  # Even one epoch's features beat chance by far under kNN on digits.
  assert summary["knn_accuracy"] > 0.5
  # tensorflow-similarity's retrieval of the 200 test embeddings among the
  # 300 training ones: recall@5 >= recall@1 = precision@1, all in [0, 1].
  assert summary["retrieval_recall_at_1"] == pytest.approx(
      summary["retrieval_precision_at_1"])
  assert 0.5 < summary["retrieval_recall_at_1"] <= summary[
      "retrieval_recall_at_5"] <= 1.0
  assert 0.0 < summary["retrieval_map_at_r"] <= 1.0
  assert "random_init_retrieval_map_at_r" in summary
  assert summary["labelled_examples_10"] == 30
  assert summary["epochs_run"] == 1 and summary["method"] == method
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert on_disk["linear_probe_accuracy"] == summary["linear_probe_accuracy"]
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["config"]["resolved"]["ssl"]["method"] == method
  # The dataset's default augmentations were resolved and recorded.
  assert config["config"]["resolved"]["pretrain"]["augment"]["flip"] is False
  rows = [json.loads(line) for line in
          (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert any("ssl_loss" in r and "ssl_representation_std" in r for r in rows)
  assert any("probe_train_loss" in r for r in rows)
  assert "linear_probe_accuracy" in rows[-1]
  for name in ("embeddings.png", "encoder.keras"):
    assert (tmp_path / name).stat().st_size > 0
  assert os.listdir(tmp_path / "checkpoints")

def test_binary_tiny_run_and_a_refused_method(tmp_path):
  # One process answers both command lines (tests/binary_batch.py).
  out = tmp_path / "run"
  proc, refused, bad_augment = run_commands("simulations.ssl_pretrain", [
      ["--dataset=digits", "--model=mlp", "--width_multiplier=0.25",
       "--method=simsiam", "--epochs=1", "--batch_size=64",
       "--train_limit=300", "--test_limit=200", "--projection_dim=16",
       "--hidden_dim=32", "--predictor_hidden_dim=8", "--probe_epochs=2",
       "--probe_batch_size=64", "--knn_k=5", "--label_fractions=0.1",
       "--finetune_epochs=1", "--finetune_head_epochs=1",
       "--finetune_lr_scale=0.5", "--embedding_points=0",
       "--crop_min_scale=0.6", "--erase_probability=0.25",
       f"--out_dir={out}"],
      ["--dataset=digits", "--method=moco",
       f"--out_dir={tmp_path / 'refused'}"],
      ["--dataset=digits", "--erase_probability=1.5",
       f"--out_dir={tmp_path / 'bad_augment'}"]])
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "simsiam: linear probe" in proc.stdout
  summary = json.loads((out / "summary.json").read_text())
  assert summary["method"] == "simsiam" and summary["embedding_points"] == 0
  assert not (out / "embeddings.png").exists()
  assert "finetune_accuracy_10" in summary
  record = json.loads((out / "config.json").read_text())["config"]
  flags = record["flags"]
  assert flags["lr_schedule"] == "cosine" and flags["optimizer"] == "adam"
  # --predictor_hidden_dim is generated from SimSiamParams and reaches it.
  assert record["resolved"]["ssl"]["params"] == {"predictor_hidden_dim": 8}
  assert record["resolved"]["finetune_recipe"] == {"head_epochs": 1,
                                                   "lr_scale": 0.5}
  # Augmentation flags change one field each of the dataset's defaults.
  augment = record["resolved"]["pretrain"]["augment"]
  assert augment["erase_probability"] == 0.25
  assert augment["crop_scale"] == [0.6, 1.0]
  assert augment["rotation_degrees"] == 10.0  # the digits' default, kept

  assert_one_error_line(refused, "unknown ssl method 'moco'; choose one of: "
                        "barlow_twins, byol, simclr, simsiam, vicreg")
  assert not (tmp_path / "refused" / "summary.json").exists()
  assert_one_error_line(bad_augment, "erase_probability must be in [0, 1]")


def test_resume_after_pretraining_finished_keeps_the_final_loss(tmp_path):
  # As a run killed while evaluating resumes: its pretraining epochs are
  # all checkpointed, none is run again.
  config = dataclasses.replace(
      tiny_config("simclr"), embedding_points=0,
      data=DataConfig("digits", train_limit=200, test_limit=100),
      probe=TrainConfig(epochs=1, batch_size=64, checkpoint_every=0))
  first = run_ssl_pretraining(config, str(tmp_path), {"method": "simclr"})
  again = run_ssl_pretraining(config, str(tmp_path), {"method": "simclr"},
                              resume=True)
  for key in ("final_ssl_loss", "final_representation_std"):
    assert again[key] == first[key] is not None, key
