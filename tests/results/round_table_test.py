"""The accuracy-by-round table against a reference setting."""

import json
import os
import subprocess
import sys

import pytest

from fedclf.errors import UserError
from fedclf.results import round_table


def fake_run(tmp_path, name, accuracies, eval_every=10, **summary):
  run_dir = tmp_path / name
  run_dir.mkdir()
  with open(run_dir / "metrics.jsonl", "w") as f:
    for i, acc in enumerate(accuracies):
      f.write(json.dumps({"round": (i + 1) * eval_every,
                          "test_accuracy": acc}) + "\n")
  return {"dir": str(run_dir), "name": name, "summary": summary}


def test_accuracy_at_rounds_and_rounds_to_the_reference(tmp_path):
  groups = {
      # Final accuracies 0.70 and 0.80: the reference's mean final is 0.75.
      "random_init": [fake_run(tmp_path, "r0", [0.3, 0.5, 0.6, 0.7],
                               centralized_test_accuracy=0.81,
                               centralized_epochs=20),
                      fake_run(tmp_path, "r1", [0.4, 0.6, 0.8, 0.8])],
      "ssl_init": [fake_run(tmp_path, "s0", [0.6, 0.76, 0.8, 0.82]),
                   fake_run(tmp_path, "s1", [0.7, 0.74, 0.75, 0.78])],
      "worse": [fake_run(tmp_path, "w0", [0.1, 0.2, 0.3, 0.4])],
  }
  spec = round_table.parse({"accuracy_at_rounds": [20, 10],
                            "reference": "random_init"}, "spec.yaml")
  assert spec.rounds == (10, 20)
  text = round_table.markdown(groups, spec, "spec.yaml")
  rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")
          for line in text.splitlines() if line.startswith("| ")}
  header = rows["setting"]
  assert header[-1].startswith("rounds to 0.7500")
  # Reference: at round 10, (0.3 + 0.4) / 2; it reaches 0.75 at round 30
  # (r1) and never (r0).
  assert rows["random_init"][2] == "0.3500 ± 0.0707"
  assert rows["random_init"][-1].startswith("30 (1/2 reached)")
  # SSL init: round 20 (0.76) and round 30 (0.75).
  assert rows["ssl_init"][-1].startswith("25.0 ± 7.1")
  assert rows["ssl_init"][5] == "5.00 ± 2.83"  # finals 0.82, 0.78 vs 0.75
  assert rows["worse"][-1].startswith("not reached (0/1)")
  central = rows["centralized on the same labelled examples (20 epochs)"]
  assert central[4] == "0.8100" and central[5] == "6.00"
  # The reference row comes first.
  assert text.index("| random_init") < text.index("| ssl_init")


def test_accuracy_at_a_round_after_the_run_is_blank():
  assert round_table.accuracy_at(([10, 20], [0.5, 0.6]), 50) is None
  assert round_table.accuracy_at(([10, 20], [0.5, 0.6]), 15) == 0.5
  assert round_table.accuracy_at(([10, 20], [0.5, 0.6]), 5) is None
  assert round_table.rounds_to(([10, 20], [0.5, 0.6]), 0.55) == 20


@pytest.mark.parametrize("table,message", [
    ({"accuracy_at_rounds": [10]}, "table.reference must name"),
    ({"reference": "x"}, "accuracy_at_rounds must be a list"),
    ({"accuracy_at_rounds": [0], "reference": "x"}, "rounds >= 1"),
    ({"accuracy_at_rounds": "10", "reference": "x"}, "must be a list"),
])
def test_bad_specs_are_one_line_errors(table, message):
  with pytest.raises(UserError, match=message):
    round_table.parse(table, "spec.yaml")
  assert round_table.parse({"title": "t"}, "spec.yaml") is None


def test_an_unknown_reference_names_the_settings(tmp_path):
  groups = {"a": [fake_run(tmp_path, "a0", [0.5])]}
  spec = round_table.RoundTableSpec((10,), "b")
  with pytest.raises(UserError, match="'b' is not a finished setting; "
                     "have: a"):
    round_table.markdown(groups, spec, "spec.yaml")


def test_reproduce_adds_the_table_for_supervised_runs_only(tmp_path):
  out = tmp_path / "out"
  spec = tmp_path / "spec.yaml"
  spec.write_text(
      "binary: simulations.federated\n"
      f"out_dir: {out}\n"
      "common: {rounds: 20}\n"
      "runs:\n"
      "  - {name: pretrain, objective: simclr, seed: 0}\n"
      "  - {name: random, seed: 0}\n"
      "  - {name: random_seed1, seed: 1}\n"
      "  - {name: pretrained, init_encoder: x, seed: 0}\n"
      "table: {title: t, accuracy_at_rounds: [10], reference: random}\n")
  out.mkdir()
  for name, flags, curve in [
      ("pretrain", {"objective": "simclr", "seed": 0}, [0.3, 0.4]),
      ("random", {"seed": 0}, [0.5, 0.7]),
      ("random_seed1", {"seed": 1}, [0.6, 0.7]),
      ("pretrained", {"init_encoder": "x", "seed": 0}, [0.72, 0.8])]:
    run = fake_run(out, name, curve)
    with open(os.path.join(run["dir"], "config.json"), "w") as f:
      json.dump({"config": {"flags": {"rounds": 20, **flags}}}, f)
    with open(os.path.join(run["dir"], "summary.json"), "w") as f:
      json.dump({"rounds_run": 20, "final_test_accuracy": curve[-1]}, f)
  proc = subprocess.run(
      [sys.executable, "-m", "simulations.reproduce", f"--spec={spec}",
       "--tables_only"], capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  readme = (out / "README.md").read_text()
  table = readme.split("## Accuracy by round, against random")[1]
  assert ("| random | 2 | 0.5500 ± 0.0707 | 0.7000 ± 0.0000 | 0.00 ± 0.00 | "
          "20.0 ± 0.0 |") in table
  assert "| pretrained | 1 | 0.7200 | 0.8000 | 10.00 | 10 |" in table
  # The pretraining run is in the seed table, not in the round table.
  assert "| pretrain |" not in table
  assert "| pretrain | 1 |" in readme.split("## Accuracy by round")[0]
