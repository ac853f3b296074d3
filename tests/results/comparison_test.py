"""Comparison tables: named runs of different binaries side by side."""

import json

import pytest

from fedclf.errors import UserError
from fedclf.results import tables
from tests.binary_batch import assert_one_error_line
from tests.binary_batch import run_commands


def _run(tmp_path, name, summary):
  run_dir = tmp_path / name
  run_dir.mkdir()
  (run_dir / "summary.json").write_text(json.dumps(summary))
  (run_dir / "config.json").write_text(json.dumps({
      "command": ["baselines/centralized.py", "--dataset=mnist",
                  f"--out_dir={run_dir}"],
      "git": {"commit": "abc123", "dirty": False}}))
  return str(run_dir)


def test_rows_take_their_metric_from_each_run(tmp_path):
  sup = _run(tmp_path, "sup", {"test_accuracy": 0.99})
  ssl = _run(tmp_path, "ssl", {"linear_probe_accuracy": 0.98123,
                               "random_init_linear_probe_accuracy": 0.9})
  text = tables.comparison_table({
      "title": "T", "note": "same encoder",
      "rows": [{"label": "supervised", "run": sup, "metric": "test_accuracy"},
               {"label": "probe", "run": ssl,
                "metric": "linear_probe_accuracy"},
               {"label": "random", "run": ssl,
                "metric": "random_init_linear_probe_accuracy"}]}, "c.yaml")
  assert text.startswith("# T\n\nsame encoder\n")
  assert f"| supervised | 0.9900 | `test_accuracy` | {sup} |" in text
  assert f"| probe | 0.9812 | `linear_probe_accuracy` | {ssl} |" in text
  assert "| random | 0.9000 |" in text
  assert "python -m baselines.centralized --dataset=mnist" in text
  assert "commit abc123" in text
  assert text.count(f"- `{ssl}`") == 1  # one command per run, not per row


@pytest.mark.parametrize("spec, message", [
    ({"rows": []}, "non-empty 'rows'"),
    ({"rows": [{"label": "x", "run": "/nonexistent"}]},
     "label, run and metric"),
    ({"rows": [{"label": "x", "run": "/nonexistent", "metric": "m"}]},
     "not a finished run"),
])
def test_bad_comparisons_are_user_errors(spec, message):
  with pytest.raises(UserError, match=message):
    tables.comparison_table(spec, "c.yaml")


def test_missing_metric_is_a_user_error(tmp_path):
  run = _run(tmp_path, "a", {"test_accuracy": 0.5})
  with pytest.raises(UserError, match="has no 'knn_accuracy'"):
    tables.comparison_table({"rows": [{"label": "a", "run": run,
                                       "metric": "knn_accuracy"}]}, "c.yaml")


def test_binary_writes_the_comparison(tmp_path):
  run = _run(tmp_path, "a", {"test_accuracy": 0.75})
  spec = tmp_path / "c.yaml"
  spec.write_text(f"title: Cmp\nrows:\n  - {{label: a, run: {run}, "
                  f"metric: test_accuracy}}\n")
  out = tmp_path / "cmp.md"
  # One process answers both command lines (tests/binary_batch.py).
  proc, bad = run_commands("simulations.tables", [
      [f"--compare={spec}", f"--out={out}"],
      [f"--compare={tmp_path / 'missing.yaml'}"]])
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "| a | 0.7500 |" in out.read_text()
  assert_one_error_line(bad, "missing.yaml")
