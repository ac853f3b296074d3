r"""Fault injection: every binary x every fault, with the runs' bytes checked.

  python -m benchmarks.fault_injection [--trials=2] [--binaries=centralized]
      [--faults=kill9,rerun_finished] [--out=results/reliability.md]
      [--merge] [--table_only]
  make faults

For each binary (one tiny but real configuration each, `BINARIES`) and each
fault (`FAULTS`), runs --trials trials and writes a Markdown table of
binaries x faults (each cell: trials, passes, and the exact failure) to
--out and every trial's details to the JSON next to it. A binary's
uninterrupted reference run is made once and shared by its faults; every
trial works in a fresh folder. Results are compared as in
tests/faults/kill_resume_binaries_test.py: every number of every
summary.json and metrics.jsonl row under the run's folder, timing fields
left out, must be equal (bit for bit, not within a tolerance).

The faults (what a trial must show to pass):
  kill9               SIGKILL at a seeded random time after a checkpoint,
                      --resume, --kills times over; then the reference's
                      result.
  sigint, sigterm     the signal after the first checkpoint: exit 130 / 143,
                      no traceback, a checkpoint kept; --resume then gives
                      the reference's result.
  full_disk           out_dir on a tmpfs too small for the run: exit != 0
                      with one line and no traceback, every JSON written
                      whole; and a finished run on a full filesystem
                      re-run with --resume: refused in one line or
                      completed, its md5 unchanged.
  read_only           a finished run's folder read-only (bind mount),
                      re-run with and without --resume: one-line refusal,
                      exit 2, md5 unchanged; a fresh out_dir under a
                      read-only parent: one-line refusal, exit 2.
  corrupt_checkpoint  the newest checkpoint of a killed run garbled, then
                      --resume: a warning, the reference's result.
  concurrent          two runs on one out_dir at once: one refused in one
                      line with exit 2, the other gives the reference's
                      result.
  rerun_finished      the same command into a finished out_dir: one-line
                      refusal, exit 2, md5 unchanged; with --overwrite the
                      old run moved aside with its md5 intact.
  nan_client          (binaries with --algorithm: the federated
                      simulation) one client's update NaN under a
                      clipped mean (benchmarks/fault_plugins.py): the run
                      finishes finite and metrics.jsonl counts the client.
The grid (simulations.reproduce) has no --resume or claim of its own (a
rerun continues it); the export (fedclf.export) has no --resume and claims
<out_dir>/<model_name>: a stopped one is started again with --overwrite
(`Binary.restart_args`, `claimed_dir` in benchmarks/fault_runs.py).
full_disk and read_only need root (mounts); without it their cells say
so.

md5 of a folder: md5 over its sorted relative paths and each file's bytes.
The table always has every binary and fault: cells no run has filled say
"not run yet", and the header then says the table is partial and which
command fills the rest. --merge keeps the cells of --out's JSON that this
run does not repeat (so a stopped suite is continued binary by binary, and
the header lists each run's command and commit); --table_only rewrites
the table from the JSON and runs nothing.

Set FEDCLF_DATA_DIR first. About 20 minutes with --trials=2 on 2 cores.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Sequence

from absl import app
from absl import flags

from benchmarks import fault_cases as fc
from benchmarks import fault_runs as fr
from benchmarks import fault_table as ft

flags.DEFINE_integer("trials", 2, "Trials per cell (binary x fault).")
flags.DEFINE_integer("slow_trials", 1,
                     "Trials per cell of the slow binaries (the tff "
                     "backend: TFF takes about a minute to import).")
flags.DEFINE_list("binaries", [], "Only these binaries (default: all).")
flags.DEFINE_list("faults", [], "Only these faults (default: all).")
flags.DEFINE_string("out", "results/reliability.md",
                    "Markdown table; the JSON goes next to it (.json).")
flags.DEFINE_integer("seed", 0, "Seeds the random kill times.")
flags.DEFINE_integer("kills", 2, "kill9: kill/resume cycles per trial.")
flags.DEFINE_integer("timeout", 600, "Seconds before a process is killed.")
flags.DEFINE_string("work_dir", "",
                    "Folder for the runs (default: a fresh temporary one, "
                    "deleted at the end unless --keep).")
flags.DEFINE_bool("keep", False, "Keep --work_dir's runs.")
flags.DEFINE_bool("merge", False,
                  "Keep the cells of --out's JSON that this run does not "
                  "repeat: fills the rows a stopped suite did not reach.")
flags.DEFINE_bool("table_only", False,
                  "Rewrite --out from its JSON; run nothing.")

FLAGS = flags.FLAGS

FAULTS = fc.FAULTS


def select(names: Sequence[str], known: Sequence[str], what: str
           ) -> List[str]:
  unknown = [n for n in names if n not in known]
  if unknown:
    raise fr.HarnessError(f"unknown {what} {', '.join(unknown)}; known: "
                          f"{', '.join(known)}")
  return list(names) or list(known)


def run_cell(ctx: fr.Context, binary: fr.Binary, fault: str,
             trials: int) -> Dict[str, object]:
  """The trials of one cell; a harness error ends the cell, recorded."""
  cell: Dict[str, object] = {"binary": binary.name, "fault": fault,
                             "trials": []}
  if not fr.applies(binary, fault):
    cell["status"] = "n/a"
    return cell
  if fault in fr.NEEDS_ROOT and os.geteuid() != 0:
    cell["status"] = "skipped (needs root for mounts)"
    return cell
  for trial in range(trials):
    rng = random.Random(f"{FLAGS.seed}/{binary.name}/{fault}/{trial}")
    folder = ctx.trial_dir(binary, fault, trial)
    start = time.monotonic()
    try:
      outcome = FAULTS[fault](ctx, binary, folder, rng)
    except fr.HarnessError as e:
      outcome = fr.Outcome(False, f"harness: {e}")
    finally:
      fr.unmount_all()
    record = dataclasses.asdict(outcome)
    record["seconds"] = round(time.monotonic() - start, 1)
    cell["trials"].append(record)
    print(f"  {binary.name} {fault} #{trial}: "
          f"{'pass' if outcome.ok else 'FAIL'} ({record['seconds']} s) "
          f"{outcome.detail}", flush=True)
  cell["status"] = "ran"
  return cell


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    binaries = [fr.BINARIES[n] for n in select(
        FLAGS.binaries, list(fr.BINARIES), "binary")]
    faults = select(FLAGS.faults, list(FAULTS), "fault")
    if "FEDCLF_DATA_DIR" not in os.environ:
      raise fr.HarnessError("set FEDCLF_DATA_DIR to the shared data")
    json_path = os.path.splitext(FLAGS.out)[0] + ".json"
    if FLAGS.table_only:
      old = ft.read_json(json_path)
      old.setdefault("runs", ft.runs_of(old))
      fr.write_text(FLAGS.out, ft.markdown(dict(old, json=json_path),
                                        FLAGS.out))
      return
    old = (ft.read_json(json_path)
           if FLAGS.merge and os.path.exists(json_path) else None)
    work = FLAGS.work_dir or tempfile.mkdtemp(prefix="fault_injection_")
    ctx = fr.Context(work, FLAGS.timeout, FLAGS.kills)
    run = {"command": " ".join(["python -m benchmarks.fault_injection",
                                *sys.argv[1:]]),
           **fr.git_state([FLAGS.out, json_path]),
           "started_utc": datetime.datetime.now(
               datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "trials": FLAGS.trials, "slow_trials": FLAGS.slow_trials,
           "kills": FLAGS.kills, "seed": FLAGS.seed, "seconds": 0.0}
    record = {"json": json_path, **run, "runs": [run], "cells": []}

    def write(references: bool = False) -> str:
      if references:
        record["references"] = ctx.reference_record()
      whole = ft.merged(old, record) if old else record
      fr.write_json(json_path, whole)
      text = ft.markdown(whole, FLAGS.out)
      fr.write_text(FLAGS.out, text)
      return text

    start = time.monotonic()
    try:
      for b in binaries:
        for fault in faults:
          print(f"{b.name} x {fault}", flush=True)
          trials = FLAGS.slow_trials if b.slow else FLAGS.trials
          cell = run_cell(ctx, b, fault, trials)
          cell["commit"] = run["commit"]
          record["cells"].append(cell)
          run["seconds"] = record["seconds"] = round(
              time.monotonic() - start, 1)
          # Both files after every cell: a stopped suite keeps its table.
          write()
    finally:
      fr.unmount_all()
      if not FLAGS.keep and not FLAGS.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    print(write(references=True))
  except fr.HarnessError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
