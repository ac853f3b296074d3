"""The fault-injection suite's fast part (benchmarks/fault_injection.py
runs all of it: `make faults`): a finished centralized run re-run into its
folder is refused in one line with exit status 2 and --overwrite moves it
aside intact, through the suite's own code; and the suite's comparisons.
A read-only folder and two runs on one folder: run_folder_test.py."""

import dataclasses
import random

import pytest

from benchmarks import fault_cases
from benchmarks import fault_runs

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
  found = fault_runs.numbers(str(tmp_path))
  assert not any("seconds" in k for k in found)
  assert fault_runs.compare(found, dict(found)) == ""
  other = dict(found, **{"./summary.json[0]/acc": 0.25000001})
  assert "acc" in fault_runs.compare(other, found)
