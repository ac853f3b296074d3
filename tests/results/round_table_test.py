"""The accuracy-by-round table against a reference setting."""

import json

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
