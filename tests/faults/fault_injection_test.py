"""The fault-injection suite's fast part (benchmarks/fault_injection.py
runs all of it: `make faults`): a finished centralized run re-run into its
folder is refused in one line with exit status 2 and --overwrite moves it
aside intact, through the suite's own code; and the suite's comparisons.
A read-only folder and two runs on one folder: run_folder_test.py."""

import dataclasses
import os
import random

import pytest

from benchmarks import fault_cases
from benchmarks import fault_runs
from benchmarks import fault_table
from benchmarks import run_numbers

# Smaller than the suite's centralized configuration: these faults need a
# finished run, not a long one.
BINARY = dataclasses.replace(
    fault_runs.BINARIES["centralized"], name="centralized_ci",
    flags=("--dataset=digits", "--model=mlp", "--epochs=3",
           "--batch_size=64", "--checkpoint_every=1", "--seed=3"))


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
  """One context: its reference run is made once and shared."""
  return fault_runs.Context(str(tmp_path_factory.mktemp("faults")),
                            timeout=300, kills=1)


def run(ctx, fault):
  trial = ctx.trial_dir(BINARY, fault.__name__, 0)
  try:
    outcome = fault(ctx, BINARY, trial, random.Random(0))
  finally:
    fault_runs.unmount_all()
  assert outcome.ok, (outcome.detail, outcome.data)
  return outcome


def test_rerun_of_a_finished_run_is_refused_and_overwrite_keeps_it(ctx):
  outcome = run(ctx, fault_cases.rerun_finished)
  assert "already holds a run" in outcome.data["rerun"]


def test_folder_md5_covers_names_and_bytes(tmp_path):
  (tmp_path / "a").write_bytes(b"x")
  first = fault_runs.folder_md5(str(tmp_path))
  (tmp_path / "a").rename(tmp_path / "b")
  assert fault_runs.folder_md5(str(tmp_path)) != first
  (tmp_path / "b").rename(tmp_path / "a")
  assert fault_runs.folder_md5(str(tmp_path)) == first


def test_numbers_leave_out_timing_and_compare_exactly(tmp_path):
  (tmp_path / "metrics.jsonl").write_text(
      '{"epoch": 1, "loss": 0.5, "epoch_seconds": 3.0}\n')
  (tmp_path / "summary.json").write_text('{"acc": 0.25, "wall_seconds": 9}')
  found = run_numbers.folder_numbers(str(tmp_path))
  assert found == {"summary.json:acc": 0.25, "metrics.jsonl:rows": 1.0,
                   "metrics.jsonl[0]:epoch": 1.0, "metrics.jsonl[0]:loss": 0.5}
  assert fault_runs.compare(found, dict(found)) == ""
  other = dict(found, **{"summary.json:acc": 0.25000001})
  assert "acc" in fault_runs.compare(other, found)


def _record(command, commit, cells):
  run = {"command": command, "commit": commit, "dirty": False,
         "started_utc": "2026-12-05T14:00:00+00:00", "machine": "x86_64",
         "trials": 1, "slow_trials": 1, "kills": 2, "seed": 0,
         "seconds": 60.0}
  return {"json": "reliability.json", **run, "runs": [run], "cells": [
      {"binary": b, "fault": f, "status": "ran", "commit": commit,
       "trials": [{"ok": ok, "detail": "d", "data": {}, "seconds": 1.0}]}
      for b, f, ok in cells]}


def test_merged_table_keeps_earlier_cells_and_says_what_is_missing():
  first = _record("first", "aaa", [("centralized", "kill9", False),
                                   ("centralized", "sigint", True)])
  second = _record("second", "bbb", [("centralized", "kill9", True)])
  whole = fault_table.merged(first, second)
  assert sorted((c["fault"], c["commit"]) for c in whole["cells"]) == [
      ("kill9", "bbb"), ("sigint", "aaa")]
  assert [r["command"] for r in whole["runs"]] == ["first", "second"]
  text = fault_table.markdown(whole, "results/reliability.md")
  row = next(l for l in text.splitlines() if l.startswith("| centralized"))
  assert row.count("nothing lost") == 2 and "not run yet" in row
  assert "| export | not run yet" in text
  assert "| reproduce |" in text and "n/a |" in text  # no nan_client
  partial = next(l for l in text.splitlines() if "**partial**" in l)
  # The slow binary last, and only the binaries with missing cells.
  assert partial.endswith(
      "`python -m benchmarks.fault_injection --trials=1 --binaries="
      "centralized,federated_local,ssl_pretrain,"
      "domain_adaptation_centralized,domain_adaptation_federated,reproduce,"
      "export,federated_tff --merge --out=results/reliability.md` runs them "
      "and merges them into this table")
  done = _record("all", "ccc", [
      (b.name, f, True) for b in fault_runs.BINARIES.values()
      for f in fault_cases.FAULTS if fault_runs.applies(b, f)])
  assert "**partial**" not in fault_table.markdown(done, "r.md")


def test_checkpoint_steps_include_a_stage_subfolder(tmp_path):
  for sub in ("run/checkpoints", "run/checkpoints/dann", "run/tb"):
    (tmp_path / sub).mkdir(parents=True, exist_ok=True)
  (tmp_path / "run/checkpoints/round_00002.npz").write_bytes(b"")
  (tmp_path / "run/checkpoints/dann/ckpt-3.index").write_bytes(b"")
  (tmp_path / "run/tb/ckpt-9.index").write_bytes(b"")
  assert {(os.path.relpath(w, tmp_path), n) for w, n in
          fault_runs.checkpoint_steps(str(tmp_path))} == {
              ("run/checkpoints", 2), ("run/checkpoints/dann", 3)}


def test_the_checkpoint_damaged_is_the_one_a_resume_starts_from(tmp_path):
  where = tmp_path / "run" / "checkpoints"
  where.mkdir(parents=True)
  for step in (1, 2, 12):
    (where / f"ckpt-{step}.index").write_bytes(b"")
    (where / f"ckpt-{step}.data-00000-of-00001").write_bytes(b"")
  assert [os.path.basename(p) for p in fault_cases.newest_checkpoint_files(
      str(tmp_path))] == ["ckpt-12.data-00000-of-00001"]
  # Killed before the state file named ckpt-12: a resume starts from 2.
  (where / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\n')
  assert [os.path.basename(p) for p in fault_cases.newest_checkpoint_files(
      str(tmp_path))] == ["ckpt-2.data-00000-of-00001"]
