"""The grid table's comparison with published values (table.published)."""

import json

import pytest

from fedclf.errors import UserError
from fedclf.results import published


def run(tmp_path, name, accuracies):
  """A finished federated run whose rounds reached `accuracies`."""
  folder = tmp_path / name
  folder.mkdir()
  (folder / "metrics.jsonl").write_text("".join(
      json.dumps({"round": r, "test_accuracy": a, "train_loss": 0.1}) + "\n"
      for r, a in enumerate(accuracies, 1)))
  return {"name": name, "dir": str(folder),
          "summary": {"final_test_accuracy": accuracies[-1]}}


def test_best_round_is_the_highest_evaluated_accuracy(tmp_path):
  assert published.best_round(run(tmp_path, "a", [0.5, 0.8, 0.7])["dir"]
                              ) == (0.8, 2)
  assert published.best_round(str(tmp_path / "missing")) is None


def test_table_compares_each_source_on_its_measure(tmp_path):
  groups = {"fedavg_iid": [run(tmp_path, "s0", [0.5, 0.9, 0.8]),
                           run(tmp_path, "s1", [0.6, 0.7, 0.86])],
            "fedavg_c1": [run(tmp_path, "c1", [0.1, 0.2])],
            "not_published": [run(tmp_path, "x", [0.3])]}
  sources = published.parse({"published": [
      {"source": "paper", "measure": "final",
       "values": {"fedavg_iid": [0.80, 0.01], "fedavg_c1": 0.1}},
      {"source": "reproduction", "measure": "best",
       "values": {"fedavg_iid": 0.85}}]}, "spec.yaml")
  text = published.markdown(groups, sources)
  rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")
          for line in text.splitlines() if line.startswith("| fedavg")}
  # Final: mean(0.8, 0.86) = 83.00; best: mean(0.9, 0.86) = 88.00 at mean
  # round (2 + 3) / 2 = 2.5, printed whole.
  assert rows["fedavg_iid"][1:4] == ["2", "83.00", "88.00 (2)"]
  assert rows["fedavg_iid"][4:8] == ["80.00 ± 1.00", "+3.00", "85.00",
                                     "+3.00 |"]
  assert rows["fedavg_c1"][4:6] == ["10.00", "+10.00"]
  assert rows["fedavg_c1"][6:8] == ["", " |"]
  assert "not_published" not in text
  assert "[1] paper; compared with our final accuracy." in text
  assert published.markdown(groups, []) == ""


def test_a_diverged_seeds_best_counts_but_its_final_is_left_out(tmp_path):
  diverged = run(tmp_path, "d0", [0.3, 0.6, 0.1])
  diverged["summary"]["final_test_accuracy"] = None
  groups = {"scaffold_c2": [diverged, run(tmp_path, "d1", [0.5, 0.8, 0.7])]}
  sources = published.parse({"published": [
      {"source": "reproduction", "measure": "best",
       "values": {"scaffold_c2": 0.5}}]}, "spec.yaml")
  row = next(line.split(" | ") for line in
             published.markdown(groups, sources).splitlines()
             if line.startswith("| scaffold_c2"))
  # Final: seed 1's alone, and it says so; best: mean(0.6, 0.8) at mean
  # round 2, as the references count their collapsed runs' best too.
  assert row[1:4] == ["2", "70.00 (1 of 2 seeds)", "70.00 (2)"]
  assert row[4:6] == ["50.00", "+20.00 |"]


@pytest.mark.parametrize("table,message", [
    ({"published": {"source": "x"}}, "must be a list"),
    ({"published": [{"values": {"a": 0.5}}]}, "needs a `source`"),
    ({"published": [{"source": "x", "measure": "mean",
                     "values": {"a": 0.5}}]}, "measure must be one of"),
    ({"published": [{"source": "x", "values": {}}]}, "must map setting"),
    ({"published": [{"source": "x", "values": {"a": 89.0}}]},
     "accuracy in \\[0, 1\\]"),
    ({"published": [{"source": "x", "values": {"a": [0.5, 0.1, 0.2]}}]},
     "or \\[mean, std\\]"),
])
def test_bad_published_values_are_user_errors(table, message):
  with pytest.raises(UserError, match=message):
    published.parse(table, "spec.yaml")
