"""The faults of the fault-injection suite, one function each.

Each takes (ctx, binary, trial folder, seeded rng) and returns an
`Outcome`; see benchmarks/fault_injection.py for what a trial must show.
"""

from __future__ import annotations

import glob
import math
import os
import random
import re
import signal
import time
from typing import List, Optional

from benchmarks.fault_runs import (Binary, Context,
                                   Outcome, Result, changed, check_result,
                                   checkpoint_steps, broken_json, file_md5s,
                                   fill_filesystem,
                                   folder_bytes, folder_md5, make_read_only,
                                   mount_tmpfs, signal_group,
                                   verdict)
from benchmarks.run_numbers import folder_numbers


def _refusal(result: Result, what: str, problems: List[str]) -> None:
  if not result.one_line_refusal():
    problems.append(f"{what}: not a one-line refusal with exit 2 "
                    f"({result.describe()})")


def _clean_failure(result: Result, what: str, problems: List[str]) -> None:
  """A failure must be one line without a traceback, not a crash."""
  if result.rc == 0:
    return
  if result.rc < 0 or result.traceback or not result.error_line.startswith(
      "error:"):
    problems.append(f"{what}: {result.describe()}")


def kill9(ctx: Context, b: Binary, trial: str, rng: random.Random
          ) -> Outcome:
  ref = ctx.reference(b)
  ctx.prepare(b, trial)
  proc, kills, seen = ctx.start(b, trial), [], set()
  for _ in range(ctx.kills):
    if not ctx.wait_progress(proc, b, trial, seen):
      kills.append("ended before a new checkpoint")
      break
    delay = rng.uniform(0, 0.5 * ref.span)
    time.sleep(delay)
    signal_group(proc, signal.SIGKILL)
    rc = proc.wait(60).rc
    kills.append(f"{delay:.2f}s after a checkpoint: exit {rc}")
    seen = ctx.progress(b, trial)
    proc = ctx.start(b, trial, b.restart_args())
  final = proc.wait(ctx.timeout)
  problems = []
  if not any(k.endswith("exit -9") for k in kills):
    problems.append("harness: no kill landed (the run ended before a new "
                    "checkpoint): nothing tested")
  if final.rc != 0:
    problems.append(f"after {len(kills)} kills: {final.describe()}")
  else:
    check_result(ctx, b, trial, problems, f"after {len(kills)} kills")
  return verdict(problems, {"kills": kills})


def _interrupt(ctx: Context, b: Binary, trial: str, rng: random.Random,
               sig: int, expected: int) -> Outcome:
  ref = ctx.reference(b)
  ctx.prepare(b, trial)
  proc = ctx.start(b, trial)
  if not ctx.wait_progress(proc, b, trial, set()):
    return Outcome(False, f"harness: ended before its first checkpoint "
                   f"({proc.wait(60).describe()})")
  time.sleep(rng.uniform(0, 0.3 * ref.span))
  signal_group(proc, sig)
  stopped = proc.wait(120)
  problems = []
  if stopped.rc == 0:
    problems.append("finished before the signal landed (nothing tested)")
  elif stopped.rc != expected:
    problems.append(f"exit {stopped.rc}, expected {expected}")
  if stopped.traceback:
    problems.append(f"a traceback: {stopped.error_line[:200]}")
  if b.kind != "export" and not checkpoint_steps(b.result_dir(trial)):
    problems.append("no checkpoint left")
  resumed = ctx.run(b, trial, b.restart_args())
  if resumed.rc != 0:
    problems.append(f"resume: {resumed.describe()}")
  else:
    check_result(ctx, b, trial, problems, "resumed")
  return verdict(problems, {"signal_exit": stopped.rc,
                            "first_stderr_line": stopped.error_line})


def sigint(ctx, b, trial, rng):
  return _interrupt(ctx, b, trial, rng, signal.SIGINT, 130)


def sigterm(ctx, b, trial, rng):
  return _interrupt(ctx, b, trial, rng, signal.SIGTERM, 143)


def full_disk(ctx: Context, b: Binary, trial: str, rng: random.Random
              ) -> Outcome:
  del rng  # Unused.
  ref = ctx.reference(b)
  problems: List[str] = []
  # 1. A disk too small for the run: it fails midway, cleanly.
  ctx.prepare(b, trial)
  disk = (os.path.join(trial, "exports") if b.kind == "export"
          else b.result_dir(trial))
  mount_tmpfs(disk, ref.size // 2)
  small = ctx.run(b, trial)
  if small.rc == 0:
    problems.append(f"completed on a disk of half its size ({ref.size // 2}"
                    f" bytes): nothing tested")
  _clean_failure(small, "too small a disk", problems)
  broken = broken_json(b.result_dir(trial))
  if broken:
    problems.append(f"too small a disk: unreadable files {broken[:3]}")
  # 2. A finished run whose filesystem is full, rerun: refused in one line
  # or completed, not a byte of it changed.
  full = os.path.join(trial, "fullfs")
  mount_tmpfs(full, 2 * folder_bytes(ref.trial) + (1 << 20))
  ctx.finished(b, full)
  guarded = os.path.join(full, "exports" if b.kind == "export"
                         else os.path.basename(b.result_dir(full)))
  before = file_md5s(guarded)
  fill_filesystem(full)
  again = ctx.run(b, full, b.resume_args())
  _clean_failure(again, "finished run on a full disk", problems)
  lost = changed(before, file_md5s(guarded))
  if lost:
    problems.append(f"finished run on a full disk changed: {lost[:3]}")
  return verdict(problems, {"small_disk": small.describe(),
                            "full_disk_rerun": again.describe()})


def read_only(ctx: Context, b: Binary, trial: str, rng: random.Random
              ) -> Outcome:
  del rng  # Unused.
  problems: List[str] = []
  ctx.finished(b, trial)
  # The export only reads its run: that one is made read-only and the
  # export must still work; the others' own finished run is.
  guarded = (os.path.join(trial, "source") if b.kind == "export"
             else b.result_dir(trial))
  before = folder_md5(guarded)
  make_read_only(guarded)
  if b.kind == "export":
    # Into a fresh folder: the finished export's own is claimed.
    result = ctx.run(b, trial, out=os.path.join(trial, "results_again"))
    if result.rc != 0:
      problems.append(f"export of a read-only run: {result.describe()}")
  elif b.kind == "grid":
    result = ctx.run(b, trial)
    if result.rc != 0:
      _refusal(result, "rerun of a read-only finished grid", problems)
  else:
    for extra in (b.resume_args(), ()):
      result = ctx.run(b, trial, extra)
      _refusal(result, f"read-only finished run, {' '.join(extra) or 'no flags'}",
               problems)
  if folder_md5(guarded) != before:
    problems.append("the read-only run's md5 changed")
  parent = os.path.join(trial, "read_only_parent")
  os.makedirs(parent)
  make_read_only(parent)
  fresh = ctx.run(b, trial, out=os.path.join(parent, "run"))
  _refusal(fresh, "fresh out_dir under a read-only parent", problems)
  return verdict(problems, {"fresh_under_read_only": fresh.describe(),
                            "fresh_seconds": fresh.seconds})


def _garble(path: str, rng: random.Random) -> None:
  """Overwrites the middle half of a file with random bytes."""
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.seek(size // 4)
    f.write(bytes(rng.getrandbits(8) for _ in range(max(size // 2, 1))))


def _state_file_step(where: str) -> Optional[int]:
  """The step TF's `checkpoint` state file in `where` names as the latest
  (None without one). A kill between writing ckpt-N's files and updating
  this file leaves ckpt-N on disk unused: a resume starts from the step
  named here, so that is the checkpoint to damage."""
  try:
    with open(os.path.join(where, "checkpoint")) as f:
      found = re.search(r'^model_checkpoint_path: ".*?(\d+)"', f.read(),
                        re.MULTILINE)
  except OSError:
    return None
  return int(found.group(1)) if found else None


def newest_checkpoint_files(folder: str) -> List[str]:
  """The data files of the newest checkpoint below `folder` that a resume
  would start from."""
  steps = checkpoint_steps(folder)
  if not steps:
    return []
  where, step = max(steps, key=lambda s: (os.path.getmtime(s[0]), s[1]))
  step = _state_file_step(where) or step
  data = re.compile(rf"ckpt-{step}\.data-.*|round_0*{step}\.npz")
  return [p for p in glob.glob(os.path.join(where, "*"))
          if data.fullmatch(os.path.basename(p))]


def corrupt_checkpoint(ctx: Context, b: Binary, trial: str,
                       rng: random.Random) -> Outcome:
  problems: List[str] = []
  ctx.prepare(b, trial)
  if b.kind == "export":
    _garble(os.path.join(trial, "source", "model.keras"), rng)
    result = ctx.run(b, trial)
    _refusal(result, "export of a run with a garbled model.keras", problems)
    return verdict(problems, {"export": result.describe()})
  proc = ctx.start(b, trial)
  if not ctx.wait_progress(proc, b, trial, set(), count=2):
    return Outcome(False, f"harness: ended before two checkpoints "
                   f"({proc.wait(60).describe()})")
  signal_group(proc, signal.SIGKILL)
  proc.wait(60)
  garbled = newest_checkpoint_files(b.result_dir(trial))
  for path in garbled:
    _garble(path, rng)
  resumed = ctx.run(b, trial, b.resume_args())
  # Paths left out: the trial's own folder is named after this fault.
  warned = [l for l in resumed.stderr.splitlines()
            if "checkpoint" in l.replace(trial, "").lower() and
            (l.startswith("W") or "warning" in l.lower())]
  if resumed.rc != 0:
    problems.append(f"resume: {resumed.describe()}")
  else:
    check_result(ctx, b, trial, problems, "resumed")
  if not warned:
    problems.append("no warning about the checkpoint")
  return verdict(problems, {
      "garbled": [os.path.relpath(p, trial) for p in garbled],
      "warning": warned[0][:300] if warned else ""})


def concurrent(ctx: Context, b: Binary, trial: str, rng: random.Random
               ) -> Outcome:
  del rng  # Unused.
  ctx.prepare(b, trial)
  procs = [ctx.start(b, trial), ctx.start(b, trial)]
  results = [p.wait(ctx.timeout) for p in procs]
  problems: List[str] = []
  finished = [r for r in results if r.rc == 0]
  refused = [r for r in results if r.rc != 0]
  if b.kind == "run" and (len(finished), len(refused)) != (1, 1):
    problems.append(f"{len(finished)} finished, {len(refused)} refused "
                    f"(expected one each): "
                    f"{'; '.join(r.describe() for r in refused)}")
  for r in refused:
    _refusal(r, "the second run", problems)
  if finished:
    check_result(ctx, b, trial, problems, "the run that finished")
  return verdict(problems, {"runs": [r.describe() for r in results]})


def _aside(folder: str) -> List[str]:
  return sorted(glob.glob(glob.escape(folder) + ".old-*"))


def rerun_finished(ctx: Context, b: Binary, trial: str, rng: random.Random
                   ) -> Outcome:
  del rng  # Unused.
  problems: List[str] = []
  ctx.finished(b, trial)
  if b.kind == "grid":
    # A grid skips its finished runs.
    guarded = b.result_dir(trial)
    before = file_md5s(guarded)
    again = ctx.run(b, trial)
    if again.rc != 0:
      problems.append(f"rerun: {again.describe()}")
    # The grid rewrites its README and tables from the runs: only the
    # runs' own files must be untouched.
    lost = [p for p in changed(before, file_md5s(guarded)) if os.sep in p]
    if lost:
      problems.append(f"rerun changed finished files: {lost[:3]}")
    check_result(ctx, b, trial, problems, "rerun")
    return verdict(problems, {"rerun": again.describe()})
  # The export claims its entry of --out_dir as a run claims --out_dir.
  result_dir = b.claimed_dir(trial)
  before = folder_md5(result_dir)
  again = ctx.run(b, trial)
  _refusal(again, "rerun without flags", problems)
  if folder_md5(result_dir) != before:
    problems.append("rerun without flags changed the finished run's md5")
  overwrite = ctx.run(b, trial, ("--overwrite",))
  moved = _aside(result_dir)
  if overwrite.rc != 0:
    problems.append(f"--overwrite: {overwrite.describe()}")
  if len(moved) != 1 or folder_md5(moved[0]) != before:
    problems.append(f"--overwrite: moved-aside folders {moved} do not hold "
                    f"the finished run byte for byte")
  check_result(ctx, b, trial, problems, "--overwrite run")
  return verdict(problems, {"rerun": again.describe(),
                            "overwrite": overwrite.describe()})


def nan_client(ctx: Context, b: Binary, trial: str, rng: random.Random
               ) -> Outcome:
  del rng  # Unused.
  result = ctx.run(b, trial, b.nan_flags)
  if result.rc != 0:
    return Outcome(False, f"run with a NaN client: {result.describe()}")
  found = folder_numbers(b.result_dir(trial))
  problems = [f"non-finite {k}" for k, v in found.items()
              if not math.isfinite(v)][:3]
  dropped = sum(v for k, v in found.items()
                if k.endswith(":clients_nonfinite"))
  if not dropped:
    problems.append("metrics.jsonl records no dropped (non-finite) client")
  return verdict(problems, {"clients_nonfinite_total": dropped})


FAULTS = {"kill9": kill9, "sigint": sigint, "sigterm": sigterm,
          "full_disk": full_disk, "read_only": read_only,
          "corrupt_checkpoint": corrupt_checkpoint, "concurrent": concurrent,
          "rerun_finished": rerun_finished, "nan_client": nan_client}
