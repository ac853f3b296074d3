"""benchmarks.refactor_parity: collecting and comparing metrics, no training."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import refactor_parity as parity
from benchmarks import run_numbers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _recording(cases, commit="abc123"):
  return {"repo": "/r", "commit": commit, "dirty": False, "cpu_count": 2,
          "started_utc": "2026-01-01T00:00:00+00:00", "cases": cases}


def _ok(metrics, tables=(), command="python -m simulations.demo --rounds=2"):
  return {"binary": "simulations.demo", "flags": ["--rounds=2"],
          "command": command, "status": "ok", "seconds": 1.0,
          "metrics": metrics, "tables": list(tables)}


OLD = _recording({
    "demo": _ok({"summary.json:test_accuracy": 0.5,
                 "metrics.jsonl[0]:round": 1.0},
                tables=["README.md | run | acc |", "README.md | a | 0.5 |"]),
    "centralized_mnist": _ok({"summary.json:test_accuracy": 0.9,
                              "summary.json:test_loss": 0.3,
                              "summary.json:epochs_run": 2.0}),
    "da_dann": _ok({"summary.json:target_accuracy": 0.7,
                    "summary.json:source_accuracy": 0.9}),
    "ssl_centralized_simclr": _ok({"summary.json:knn_accuracy": 0.8}),
})


def _write(tmp_path, name, recording):
  path = tmp_path / name
  path.write_text(json.dumps(recording))
  return str(path)


def test_identical_recordings_are_the_same(tmp_path):
  old = _write(tmp_path, "old.json", OLD)
  new = _write(tmp_path, "new.json", _recording(OLD["cases"], "def456"))
  report = tmp_path / "parity.md"
  assert parity.compare_files(old, new, str(report), 1e-5)
  text = report.read_text()
  assert "**4 of 4 cases the same**" in text
  assert ("| centralized_mnist | `python -m simulations.demo --rounds=2` | "
          "3 | 0 | same |") in text
  assert "commit `abc123`" in text and "commit `def456`" in text


def test_float_noise_within_tolerance_is_the_same():
  new = json.loads(json.dumps(OLD))
  new["cases"]["centralized_mnist"]["metrics"]["summary.json:test_loss"] += (
      4e-6)
  results = {c.name: c for c in parity.compare_recordings(OLD, new, 1e-5)}
  assert results["centralized_mnist"].same
  assert results["centralized_mnist"].max_diff == pytest.approx(4e-6)
  assert results["centralized_mnist"].max_key == "summary.json:test_loss"


def test_differences_are_reported_per_case(tmp_path):
  new = json.loads(json.dumps(OLD))
  cases = new["cases"]
  cases["centralized_mnist"]["metrics"]["summary.json:test_accuracy"] = 0.91
  cases["centralized_mnist"]["metrics"]["summary.json:epochs_run"] = 3.0
  del cases["da_dann"]["metrics"]["summary.json:source_accuracy"]
  cases["da_dann"]["metrics"]["summary.json:new_metric"] = 1.0
  cases["demo"]["tables"][1] = "README.md | a | 0.6 |"
  cases["ssl_centralized_simclr"] = {"status": "failed", "error": "boom\n",
                                     "command": "python -m x"}
  old = _write(tmp_path, "old.json", OLD)
  report = tmp_path / "parity.md"
  assert not parity.compare_files(old, _write(tmp_path, "new.json", new),
                                  str(report), 1e-5)
  results = {c.name: c for c in parity.compare_recordings(OLD, new, 1e-5)}
  assert [k for k, _, _ in results["centralized_mnist"].differing] == [
      "summary.json:epochs_run", "summary.json:test_accuracy"]
  assert results["centralized_mnist"].max_diff == pytest.approx(1.0)
  assert results["da_dann"].missing == ["summary.json:source_accuracy"]
  assert results["da_dann"].added == ["summary.json:new_metric"]
  assert results["demo"].table_diff == ["- old: README.md | a | 0.5 |",
                                        "+ new: README.md | a | 0.6 |"]
  assert "failed on the new code: boom" in results[
      "ssl_centralized_simclr"].problem
  text = report.read_text()
  assert "**0 of 4 cases the same**" in text
  assert "**DIFFERS** (2 differ)" in text
  assert "**DIFFERS** (1 missing in new)" in text
  assert "1 (+1 new only)" in text
  assert "**DIFFERS** (table differs)" in text
  assert "`summary.json:test_accuracy`: 0.9 → 0.91" in text


def test_cases_missing_on_one_side_differ():
  new = _recording({k: v for k, v in OLD["cases"].items() if k != "demo"})
  results = {c.name: c for c in parity.compare_recordings(OLD, new, 1e-5)}
  assert results["demo"].problem == "not run on the new code"
  assert not results["demo"].same
  only = parity.compare_recordings(OLD, new, 1e-5, only=["da_dann"])
  assert [c.name for c in only] == ["da_dann"] and only[0].same


def test_nan_equals_nan_but_not_a_number():
  old = _recording({"demo": _ok({"a": float("nan"), "b": 1.0})})
  same = _recording({"demo": _ok({"a": float("nan"), "b": 1.0})})
  other = _recording({"demo": _ok({"a": 1.0, "b": float("nan")})})
  assert parity.compare_recordings(old, same, 1e-5)[0].same
  assert len(parity.compare_recordings(old, other, 1e-5)[0].differing) == 2


def test_wall_clock_fields_are_not_compared():
  new = json.loads(json.dumps(OLD))
  # An older recording may hold a field now excluded: it is skipped too.
  old_with_time = json.loads(json.dumps(OLD))
  old_with_time["cases"]["demo"]["metrics"][
      "metrics.jsonl[0]:round_seconds"] = 1.0
  new["cases"]["demo"]["metrics"]["metrics.jsonl[0]:round_seconds"] = 9.0
  new["cases"]["demo"]["metrics"]["summary.json:tff_worker_pids[0]"] = 7.0
  results = parity.compare_recordings(old_with_time, new, 1e-5)
  assert all(c.same for c in results)
  assert not any(c.added for c in results)


def test_flatten_and_tables_skip_wall_clock_and_strings():
  out = {}
  run_numbers.flatten({"test_accuracy": 0.5, "examples_per_second": 9.0,
                  "name": "x", "stopped_early": False,
                  "domain_accuracy": {"usps": 0.6},
                  "confusion": [[1, 2]], "timing": {"round_seconds": 1}},
                 "summary.json:", out)
  assert out == {"summary.json:test_accuracy": 0.5,
                 "summary.json:stopped_early": 0.0,
                 "summary.json:domain_accuracy/usps": 0.6,
                 "summary.json:confusion[0][0]": 1.0,
                 "summary.json:confusion[0][1]": 2.0}
  rows = parity.markdown_tables(
      "# t\n\n| run | acc | train seconds | examples/s |\n|---|---|---|---|\n"
      "| a | 0.5 | 3 | 100 |\n\ntext\n")
  assert rows == ["| run | acc |", "| --- | --- |", "| a | 0.5 |"]


def test_collect_metrics_reads_every_run(tmp_path):
  (tmp_path / "centralized").mkdir()
  (tmp_path / "centralized" / "summary.json").write_text(
      json.dumps({"test_accuracy": 0.9, "wall_seconds": 3}))
  (tmp_path / "metrics.jsonl").write_text(
      '{"round": 1, "test_accuracy": 0.1, "round_seconds": 2}\n'
      '{"round": 2, "test_accuracy": 0.2}\n')
  (tmp_path / "README.md").write_text("| run | acc |\n|---|---|\n| a | 1 |\n")
  metrics, tables = parity.collect_metrics(str(tmp_path))
  assert metrics == {"centralized/summary.json:test_accuracy": 0.9,
                     "metrics.jsonl:rows": 2.0,
                     "metrics.jsonl[0]:round": 1.0,
                     "metrics.jsonl[0]:test_accuracy": 0.1,
                     "metrics.jsonl[1]:round": 2.0,
                     "metrics.jsonl[1]:test_accuracy": 0.2}
  assert tables == ["README.md | run | acc |", "README.md | --- | --- |",
                    "README.md | a | 1 |"]


def test_case_table_is_well_formed():
  names = [c.name for c in parity.CASES]
  assert len(names) == len(set(names))
  for case in parity.CASES:
    assert not any(f.startswith("--out_dir") for f in case.flags), case.name
    assert all(f.startswith("--") and "=" in f for f in case.flags), case.name
  # Every federated binary's case family runs on both backends somewhere.
  backends = {f for c in parity.CASES for f in c.flags
              if f.startswith("--backend=")}
  assert "--backend=tff" in backends


def test_flag_overrides_replace_a_case_flags(tmp_path):
  path = _write(tmp_path, "o.json", {"demo": ["--rounds=3"]})
  overrides = parity.load_overrides(path)
  demo = parity.select_cases(["demo"])[0]
  assert parity.case_flags(demo, overrides) == ["--rounds=3"]
  assert parity.case_flags(parity.CASES[1], overrides) == list(
      parity.CASES[1].flags)
  with pytest.raises(parity.ParityError, match="unknown case"):
    parity.load_overrides(_write(tmp_path, "bad.json", {"nope": []}))
  with pytest.raises(parity.ParityError, match="unknown case"):
    parity.select_cases(["nope"])


def test_compare_binary_exits_1_when_a_case_differs(tmp_path):
  new = json.loads(json.dumps(OLD))
  new["cases"]["da_dann"]["metrics"]["summary.json:target_accuracy"] = 0.8
  old = _write(tmp_path, "old.json", OLD)
  report = tmp_path / "r.md"
  argv = [sys.executable, "-m", "benchmarks.refactor_parity",
          f"--report={report}"]
  proc = subprocess.run(
      argv + [f"--compare={old},{_write(tmp_path, 'new.json', new)}"],
      cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 1, proc.stderr
  assert "**DIFFERS**" in report.read_text()
  proc = subprocess.run(argv + [f"--compare={old},{old}"], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr


def test_a_key_renamed_on_purpose_is_compared_under_its_new_name():
  old = _ok({"summary.json:dann/gamma": 10.0})
  same = parity.compare_case("da_dann", old,
                             _ok({"summary.json:dann/dann_gamma": 10.0}), 0.0)
  assert same.same and same.compared == 1
  changed = parity.compare_case(
      "da_dann", old, _ok({"summary.json:dann/dann_gamma": 5.0}), 0.0)
  assert changed.differing == [("summary.json:dann/dann_gamma", 10.0, 5.0)]
