"""The domain_adaptation binary: a tiny run, and bad input giving one error
line and exit status 2."""

import json
import os

import pytest

from tests.binary_batch import assert_one_error_line
from tests.binary_batch import run_commands

REAL_DATA = os.environ.get("FEDCLF_DATA_DIR", "")
needs_real_data = pytest.mark.skipif(
    not os.path.isdir(os.path.join(REAL_DATA, "usps")),
    reason="FEDCLF_DATA_DIR with the real files is not set")


@needs_real_data
def test_tiny_runs(tmp_path):
  # One process answers both command lines (tests/binary_batch.py).
  finetune, dann = run_commands("simulations.domain_adaptation", [
      ["--source=usps", "--target=mnist", "--method=finetune", "--model=mlp",
       "--epochs=1", "--finetune_epochs=1", "--target_labels_per_class=2",
       "--train_limit=300", "--test_limit=200", "--lr=0.05",
       f"--out_dir={tmp_path / 'finetune'}"],
      ["--mode=federated", "--method=dann", "--model=mlp", "--num_clients=3",
       "--clients_per_round=3", "--rounds=2", "--eval_rounds=1",
       "--train_limit=150", "--target_train_limit=90", "--test_limit=100",
       "--dann_hidden=16", f"--out_dir={tmp_path / 'dann'}"]])
  check_finetune_run(finetune, tmp_path / "finetune")
  check_federated_dann_run(dann, tmp_path / "dann")


def check_finetune_run(proc, out):
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "finetune usps -> mnist: target accuracy" in proc.stdout
  summary = json.loads((out / "summary.json").read_text())
  for key in ("target_accuracy", "source_accuracy", "method", "source",
              "target"):
    assert key in summary
  assert summary["target_labelled_examples"] == 20
  config = json.loads((out / "config.json").read_text())
  assert config["config"]["flags"]["method"] == "finetune"
  # The method's params, generated flags and all, are recorded resolved.
  assert config["config"]["resolved"]["adapt"]["params"] == {
      "target_labels_per_class": 2, "finetune_epochs": 1,
      "finetune_lr": 0.001, "finetune_batch_size": 32}


def check_federated_dann_run(proc, out):
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "federated dann mnist -> usps: global model test accuracy" in (
      proc.stdout)
  summary = json.loads((out / "summary.json").read_text())
  assert summary["rounds_run"] == 2 and summary["num_clients"] == 3
  # Two source clients share 150 images, one target client has 90.
  assert summary["client_sizes"] == [75, 75, 90]
  assert set(summary["domain_accuracy"]) == {"mnist", "usps"}
  rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text()
          .splitlines()]
  assert [r["round"] for r in rows if "test_accuracy" in r] == [1, 2]


BAD_FLAGS = [
    (["--source=svhn"], "unknown domain 'svhn'; choose one of: mnist"),
    (["--channels=2"], "value should be one of"),
    (["--mode=federated", "--method=finetune"],
     "--mode=federated runs --method=source_only|dann|self_training|"
     "fixmatch|target_oracle"),
    # The older spelling means the same mode.
    (["--federated", "--method=finetune"],
     "--mode=federated runs --method=source_only|dann|self_training|"
     "fixmatch|target_oracle"),
    (["--federated", "--mode=federated_labelled"],
     "--federated means --mode=federated; it contradicts "
     "--mode=federated_labelled"),
    (["--mode=federated", "--method=dann", "--algorithm=fedprox"],
     "--algorithm applies to --mode=federated_labelled"),
    (["--mode=federated_labelled", "--method=dann"],
     "--method applies to --mode=centralized and --mode=federated"),
    (["--mode=federated", "--seeds=0,1"], "--seeds does not apply"),
    (["--method=dann", "--dann_hidden=16,x"],
     "--dann_hidden: expected integers, got 16,x"),
    (["--method=dann", "--dann_hidden=0"],
     "dann domain classifier widths must be >= 1"),
    (["--method=finetune", "--target_labels_per_class=0"],
     "finetune needs target_labels_per_class >= 1"),

]


def test_bad_flags(tmp_path):
  answers = run_commands("simulations.domain_adaptation", [
      [*flags, f"--out_dir={tmp_path}"] for flags, _ in BAD_FLAGS])
  for proc, (_, message) in zip(answers, BAD_FLAGS):
    assert_one_error_line(proc, message)
