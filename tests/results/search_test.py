"""Hyper-parameter search: parsing, sampling, choice on validation, and a
tiny end-to-end search through simulations.reproduce."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fedclf.errors import UserError
from fedclf.results import grid
from fedclf.results import search

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def parse(raw):
  return search.parse_search("spec.yaml", raw)


def test_random_search_is_seeded_and_respects_the_space():
  raw = {"method": "random", "trials": 50, "seed": 3,
         "objective": "best_val_accuracy",
         "space": {"lr": {"log_uniform": [1e-4, 1e-1]},
                   "dropout": {"uniform": [0.0, 0.5]},
                   "epochs": {"int_uniform": [2, 4]},
                   "batch_size": [16, 32]}}
  trials = parse(raw).trial_values()
  assert trials == parse(raw).trial_values()
  assert trials != parse({**raw, "seed": 4}).trial_values()
  lrs = np.array([t["lr"] for t in trials])
  assert lrs.min() >= 1e-4 and lrs.max() <= 1e-1
  # Log-uniform: about half the draws fall below the geometric midpoint.
  assert 10 < np.sum(lrs < np.sqrt(1e-4 * 1e-1)) < 40
  assert all(0.0 <= t["dropout"] <= 0.5 for t in trials)
  assert {t["epochs"] for t in trials} == {2, 3, 4}
  assert all(isinstance(t["epochs"], int) for t in trials)
  assert {t["batch_size"] for t in trials} == {16, 32}


def test_grid_search_is_the_cartesian_product():
  spec = parse({"method": "grid", "objective": "best_val_accuracy",
                "space": {"lr": [0.1, 0.01], "batch_size": [8, 16, 32]}})
  values = spec.trial_values()
  assert len(values) == 6
  assert {(v["lr"], v["batch_size"]) for v in values} == {
      (a, b) for a in (0.1, 0.01) for b in (8, 16, 32)}


@pytest.mark.parametrize("raw, message", [
    ({"objective": "final_test_accuracy", "trials": 2,
      "space": {"lr": [1]}}, "never a test metric"),
    ({"objective": "accuracy", "trials": 2, "space": {"lr": [1]}},
     "validation metric"),
    ({"method": "grid", "objective": "best_val_accuracy",
      "space": {"lr": {"uniform": [0, 1]}}}, "grid search needs lists"),
    ({"objective": "best_val_accuracy", "trials": 0, "space": {"lr": [1]}},
     "trials >= 1"),
    ({"objective": "best_val_accuracy", "trials": 2, "space": {}},
     "non-empty space"),
    ({"objective": "best_val_accuracy", "trials": 2,
      "space": {"lr": {"log_uniform": [0, 1]}}}, "low > 0"),
    ({"objective": "best_val_accuracy", "trials": 2,
      "space": {"lr": {"normal": [0, 1]}}}, "unknown distribution"),
    ({"objective": "best_val_accuracy", "trials": 2,
      "space": {"seed": [1, 2]}}, "seed cannot be searched"),
    ({"objective": "best_val_accuracy", "trials": 2, "budget": 3,
      "space": {"lr": [1]}}, "unknown search key"),
    ({"method": "bayes", "objective": "best_val_accuracy",
      "space": {"lr": [1]}}, "grid or random"),
])
def test_bad_search_sections_are_user_errors(raw, message):
  with pytest.raises(UserError, match=message):
    parse(raw)


def test_search_cannot_be_combined_with_a_grid(tmp_path):
  path = tmp_path / "spec.yaml"
  path.write_text(f"""
binary: baselines.centralized
out_dir: {tmp_path}
grid: {{lr: [0.1]}}
search: {{objective: best_val_accuracy, trials: 1, space: {{lr: [0.1]}}}}
""")
  with pytest.raises(UserError, match="no grid or runs"):
    grid.load_spec(str(path))


def _write_summary(out_dir, name, summary):
  os.makedirs(os.path.join(out_dir, name), exist_ok=True)
  with open(os.path.join(out_dir, name, "summary.json"), "w") as f:
    json.dump(summary, f)


def test_choice_uses_the_validation_objective_and_skips_unfinished(tmp_path):
  spec = parse({"method": "grid", "objective": "best_val_accuracy",
                "space": {"lr": [0.1, 0.01, 0.001]}})
  # Trial 1 has the best validation score but the worst test score: the
  # choice must follow validation. Trial 2 never finished.
  _write_summary(tmp_path, search.trial_name(0),
                 {"best_val_accuracy": 0.80, "final_test_accuracy": 0.95})
  _write_summary(tmp_path, search.trial_name(1),
                 {"best_val_accuracy": 0.90, "final_test_accuracy": 0.50})
  record = search.choose(spec, str(tmp_path))
  assert record["chosen"] == {"lr": 0.01}
  assert record["best_objective"] == 0.90
  assert [t["objective"] for t in record["trials"]] == [0.80, 0.90, None]
  text = search.markdown(record)
  assert "| **trial_01** | **0.01** | **0.9000** |" in text
  assert "not finished" in text
  _write_summary(tmp_path, search.trial_name(2), {"best_val_accuracy": 0.7})
  lowest = search.choose(
      parse({"method": "grid", "objective": "best_val_accuracy",
             "mode": "min", "space": {"lr": [0.1, 0.01, 0.001]}}),
      str(tmp_path))
  assert lowest["chosen"] == {"lr": 0.001}


def test_choice_without_finished_trials_is_a_user_error(tmp_path):
  spec = parse({"method": "grid", "objective": "best_val_accuracy",
                "space": {"lr": [0.1]}})
  with pytest.raises(UserError, match="no finished search trial"):
    search.choose(spec, str(tmp_path))


def test_tiny_federated_search_end_to_end(tmp_path):
  out = tmp_path / "out"
  path = tmp_path / "spec.yaml"
  path.write_text(f"""
binary: simulations.federated
out_dir: {out}
common: {{dataset: digits, model: mlp, num_clients: 4, clients_per_round: 4,
          rounds: 2, per_client_eval: 0, val_fraction: 0.2}}
search:
  method: grid
  objective: best_val_accuracy
  space: {{client_lr: [0.0001, 0.1]}}
  final_seeds: [0]
table: {{title: tiny search}}
""")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, "-m", "simulations.reproduce",
                         f"--spec={path}"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  record = json.loads((out / "search.json").read_text())
  scores = [t["objective"] for t in record["trials"]]
  assert all(s is not None for s in scores)
  assert record["best_objective"] == max(scores)
  # A learning rate of 1e-4 barely moves in 2 rounds; 0.1 learns digits.
  assert record["chosen"] == {"client_lr": 0.1}
  final = json.loads((out / "best_seed0" / "summary.json").read_text())
  # 20% of digits' 1,437 training images are held out before partitioning.
  assert final["validation_examples"] == 287
  assert final["dataset"]["train_examples"] == 1437 - 287
  partition = json.loads((out / "best_seed0" / "partition.json").read_text())
  assert partition["summary"]["mean_size"] * 4 == 1437 - 287
  assert "final_test_accuracy" in final
  readme = (out / "README.md").read_text()
  assert "Hyper-parameter search (grid, 2 trials" in readme
  assert "Chosen: client_lr=0.1" in readme
  assert "best_seed0" in readme or "client_lr=0.1" in readme
