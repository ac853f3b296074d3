"""Experiment grids: a spec file expands into runs of fedclf's binaries.

A spec (YAML, or CSV with one run per row) names the binary, the common
flags and a grid; every combination becomes one run folder under the spec's
`out_dir`:

    binary: simulations.federated
    out_dir: results/mcmahan
    flagfile: experiments/mcmahan/cnn_iid.cfg   # optional
    common: {rounds: 60, target_accuracy: 0.99}
    grid:                                        # cartesian product
      algorithm: [fedavg, fedsgd]
      client_lr: [0.05, 0.1]
      seed: [0, 1, 2]
    runs:                                        # optional extra runs
      - {name: fedavg_shards, partition: shards, rounds: 400}
    table: {title: "McMahan et al. 2017",
            target_accuracy: 0.99,                   # optional plot lines;
            references: {"paper, FedAvg": 0.992},    # else runs' target
            upload_curves: true,  # optional: accuracy_vs_upload.png too
            published: [...],     # optional: see fedclf/results/published.py
            accuracy_at_rounds: [10, 50],  # optional, with reference: see
            reference: fedavg}             # fedclf/results/round_table.py

Runs execute as subprocesses (a failing run does not stop the grid), are
skipped when finished (summary.json) and resumed when checkpoints exist, so
rerunning an interrupted grid continues it (a run stopped before its first
checkpoint is moved aside by --overwrite and started afresh). Ctrl-C or
SIGTERM to the grid stops its current run with a checkpoint first.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging
import yaml

from fedclf import process_exit
from fedclf.errors import UserError
from fedclf.results import run_folder
from fedclf.results import search as search_lib
from fedclf.results import tables
from fedclf.results.progress import GridProgress
from fedclf.results.record import atomic_write_json

BINARIES = ("simulations.federated", "simulations.ssl_pretrain",
            "simulations.domain_adaptation", "baselines.centralized")


@dataclasses.dataclass(frozen=True)
class RunSpec:
  name: str
  flags: Dict[str, object]


@dataclasses.dataclass(frozen=True)
class GridSpec:
  binary: str
  out_dir: str
  runs: List[RunSpec]
  flagfile: str = ""
  table: Dict[str, object] = dataclasses.field(default_factory=dict)
  # With a search, `runs` are the trials; the final runs are known only
  # once the trials are scored (`final_runs`).
  search: Optional[search_lib.SearchSpec] = None
  common: Dict[str, object] = dataclasses.field(default_factory=dict)


def _flag_text(value) -> str:
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (list, tuple)):
    return ",".join(str(v) for v in value)
  return str(value)


def _short(value) -> str:
  return _flag_text(value).replace(",", "+").replace("/", "-")


def _load(path: str) -> Dict:
  if not os.path.exists(path):
    raise UserError(f"spec file {path} does not exist")
  try:
    if path.endswith(".csv"):
      with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
      if not rows or "binary" not in rows[0]:
        raise UserError(f"{path}: a CSV spec needs a header with 'binary', "
                        f"'out_dir', 'name' and flag columns")
      first = rows[0]
      return {"binary": first["binary"], "out_dir": first["out_dir"],
              "runs": [{k: v for k, v in r.items()
                        if k not in ("binary", "out_dir") and v != ""}
                       for r in rows]}
    with open(path) as f:
      spec = yaml.safe_load(f)
  except (yaml.YAMLError, csv.Error, UnicodeDecodeError) as e:
    raise UserError(f"cannot parse spec {path}: {e}".splitlines()[0]) from None
  if not isinstance(spec, dict):
    raise UserError(f"spec {path} must be a mapping")
  return spec


def load_spec(path: str) -> GridSpec:
  """Parses and expands a spec file; errors are `UserError`s."""
  spec = _load(path)
  unknown = sorted(set(spec) - {"binary", "out_dir", "flagfile", "common",
                                "grid", "runs", "table", "name_template",
                                "search"})
  if unknown:
    raise UserError(f"{path}: unknown spec key {unknown[0]!r}")
  binary = spec.get("binary")
  if binary not in BINARIES:
    raise UserError(f"{path}: binary must be one of: {', '.join(BINARIES)}; "
                    f"got {binary!r}")
  if not spec.get("out_dir"):
    raise UserError(f"{path}: out_dir is required")
  common = dict(spec.get("common") or {})
  grid = dict(spec.get("grid") or {})
  for key, values in grid.items():
    if not isinstance(values, list) or not values:
      raise UserError(f"{path}: grid entry {key!r} must be a non-empty list")
  template = spec.get("name_template")
  runs: List[RunSpec] = []
  search = None
  if spec.get("search") is not None:
    if grid or spec.get("runs"):
      raise UserError(f"{path}: a spec with a search has no grid or runs; "
                      f"put fixed flags in common")
    search = search_lib.parse_search(path, spec["search"])
    runs = [RunSpec(search_lib.trial_name(i), {**common, **values})
            for i, values in enumerate(search.trial_values())]
  if grid:
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
      values = dict(zip(keys, combo))
      name = (template.format(**values) if template else "_".join(
          f"{k}{_short(v)}" if k != "algorithm" else _short(v)
          for k, v in values.items()))
      runs.append(RunSpec(name, {**common, **values}))
  for extra in spec.get("runs") or []:
    extra = dict(extra)
    name = extra.pop("name", None)
    if not name:
      raise UserError(f"{path}: every entry of 'runs' needs a name")
    runs.append(RunSpec(str(name), {**common, **extra}))
  if not runs:
    raise UserError(f"{path}: the spec defines no runs (grid or runs)")
  names = [r.name for r in runs]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise UserError(f"{path}: run name {duplicates[0]!r} occurs twice; add "
                    f"the differing flag to name_template")
  for run in runs:
    if "out_dir" in run.flags:
      raise UserError(f"{path}: run {run.name}: out_dir is set by the spec")
  return GridSpec(binary=binary, out_dir=str(spec["out_dir"]), runs=runs,
                  flagfile=str(spec.get("flagfile") or ""),
                  table=dict(spec.get("table") or {}), search=search,
                  common=common)


def choose_and_record(spec: GridSpec) -> Dict:
  """Scores the search trials, writes <out_dir>/search.json, returns it."""
  record = search_lib.choose(spec.search, spec.out_dir)
  atomic_write_json(os.path.join(spec.out_dir, "search.json"), record)
  return record


def final_runs(spec: GridSpec, record: Dict) -> List[RunSpec]:
  """The chosen values rerun on the search's final seeds."""
  return [RunSpec(name, flags) for name, flags in search_lib.final_flags(
      spec.common, record["chosen"], spec.search.final_seeds)]


def command(spec: GridSpec, run: RunSpec, python: str = sys.executable
            ) -> List[str]:
  """The command line of one run (resuming if it has checkpoints; the
  binary refuses a resume whose setting differs from the spec's)."""
  out = os.path.join(spec.out_dir, run.name)
  argv = [python, "-m", spec.binary]
  if spec.flagfile:
    argv.append(f"--flagfile={spec.flagfile}")
  argv += [f"--{k}={_flag_text(v)}" for k, v in run.flags.items()]
  argv.append(f"--out_dir={out}")
  if run_folder.has_checkpoints(out):
    argv.append("--resume")
  elif run_folder.existing_run(out):
    # Stopped before its first checkpoint: nothing to resume from, so the
    # partial run moves aside (kept) and the run starts afresh.
    argv.append("--overwrite")
  return argv


def status(spec: GridSpec, run: RunSpec) -> str:
  out = os.path.join(spec.out_dir, run.name)
  if os.path.exists(os.path.join(out, "summary.json")):
    return "done"
  if os.path.isdir(os.path.join(out, "checkpoints")):
    return "partial"
  return "todo"


def run_grid(spec: GridSpec, only: Sequence[str] = (), dry_run: bool = False,
             python: str = sys.executable) -> Dict[str, str]:
  """Runs every unfinished run; returns name -> outcome.

  With a search: the trials first, then the chosen values on the final
  seeds (skipped on a dry run, which cannot know the choice).
  """
  outcomes = _run_each(spec, spec.runs, only, dry_run, python)
  if spec.search is not None and not dry_run and not only:
    record = choose_and_record(spec)
    logging.info("search chose %s (%s %.4f)", record["chosen"],
                 record["objective"], record["best_objective"])
    outcomes.update(_run_each(spec, final_runs(spec, record), (), False,
                              python))
  return outcomes


def _run_each(spec: GridSpec, runs: Sequence[RunSpec], only: Sequence[str],
              dry_run: bool, python: str) -> Dict[str, str]:
  outcomes: Dict[str, str] = {}
  selected = [r for r in runs if not only or r.name in only]
  missing = sorted(set(only) - {r.name for r in runs})
  if missing:
    raise UserError(f"no run named {missing[0]!r} in the spec; runs: "
                    f"{', '.join(r.name for r in runs)}")
  progress = GridProgress(len(selected))
  for i, run in enumerate(selected, start=1):
    state = status(spec, run)
    if state == "done":
      outcomes[run.name] = "skipped (done)"
      progress.skip()
      continue
    argv = command(spec, run, python)
    logging.info("[%d/%d] %s: %s", i, len(selected), run.name,
                 " ".join(argv[1:]))
    if dry_run:
      outcomes[run.name] = "dry run"
      continue
    progress.start()
    logging.info("%s", progress.line())
    returncode = _run_child(argv)
    outcomes[run.name] = _outcome(spec, run, returncode)
    _finish(progress, outcomes[run.name])
  return outcomes


def _finish(progress: GridProgress, outcome: str) -> None:
  """Counts a run that ended into the grid's progress and logs it; a run
  another process had ended at once, so its time is no run's time."""
  progress.finish(failed=outcome.startswith("failed"),
                  timed=outcome == "ok" or outcome.startswith("failed"))
  logging.info("%s", progress.line())


def _outcome(spec: GridSpec, run: RunSpec, returncode: int) -> str:
  """A run refused because another process (the same grid started twice)
  runs or has finished it is not a failure of this grid."""
  if returncode == 0:
    return "ok"
  if status(spec, run) == "done":
    return "done (by another process)"
  if run_folder.held_elsewhere(os.path.join(spec.out_dir, run.name)):
    return "skipped (running in another process)"
  return f"failed (exit {returncode})"


def check_writable(out_dir: str) -> None:
  """Refuses in one line (UserError) a spec out_dir that cannot be written
  (read-only, no permission) before any run starts, rather than one error
  per run."""
  try:
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=out_dir):
      pass
  except OSError as e:
    raise UserError(f"cannot write in the spec's out_dir {out_dir}: "
                    f"{e.strerror or e}") from None


def failure_report(outcomes: Dict[str, str]) -> Optional[Tuple[str, int]]:
  """For a grid whose runs failed: its one-line message and exit status (2
  when every failed run exited 2, a user-fixable refusal such as a full
  disk; else 1); None when none failed. The grid's tables are written from
  the runs that finished first."""
  failed = {n: o for n, o in outcomes.items() if o.startswith("failed")}
  if not failed:
    return None
  which = ", ".join(f"{name} {outcome.replace('failed ', '')}"
                    for name, outcome in failed.items())
  code = 2 if all(o == "failed (exit 2)" for o in failed.values()) else 1
  return (f"{len(failed)} of {len(outcomes)} runs failed: {which}; fix the "
          f"cause and rerun the same command to continue them", code)


def _run_child(argv: List[str]) -> int:
  """Runs one binary and returns its exit status. Interrupted (Ctrl-C,
  SIGTERM, a closed output), the grid stops the run cleanly, with its
  checkpoint, before it exits itself: subprocess.run would SIGKILL it after
  0.25 s, or (SIGTERM) leave it running on."""
  process = subprocess.Popen(argv)
  try:
    return process.wait()
  except BaseException:
    process_exit.stop_child(process)
    raise


def seed_group_key(flags: Dict[str, object]) -> str:
  """Runs that differ only in seed (and output) form one table row."""
  return ", ".join(f"{k}={_flag_text(v)}" for k, v in sorted(flags.items())
                   if k not in tables.NON_SETTING_FLAGS)


def setting_labels(runs: List[RunSpec]) -> Dict[str, str]:
  """Run name -> setting name: runs that differ only in seed share one, the
  part their names have in common ("x", "x_seed1" -> "x")."""
  names: Dict[str, List[str]] = {}
  for run in runs:
    names.setdefault(seed_group_key(run.flags), []).append(run.name)
  labels = {}
  for members in names.values():
    common = os.path.commonprefix(members)
    if len(members) > 1:
      common = re.sub(r"([_-]+(seed|s))?[_-]*$", "", common)
    for name in members:
      labels[name] = common or members[0]
  return labels


def table_lines(table: Dict[str, object], path: str
                ) -> Tuple[Optional[float], Dict[str, float]]:
  """The horizontal lines a spec's `table` asks for on its accuracy plot:
  `target_accuracy` (one solid line; without it, the runs' own
  --target_accuracy) and `references` ({label: accuracy}, dashed, e.g. a
  paper's numbers). Bad values are one-line UserErrors."""
  target = table.get("target_accuracy")
  if target is not None and not _is_accuracy(target):
    raise UserError(f"{path}: table.target_accuracy must be a number in "
                    f"(0, 1]; got {target!r}")
  references = table.get("references") or {}
  if not isinstance(references, dict) or not all(
      _is_accuracy(v) for v in references.values()):
    raise UserError(f"{path}: table.references must map labels to "
                    f"accuracies in (0, 1]")
  return (None if target is None else float(target),
          {str(k): float(v) for k, v in references.items()})


def _is_accuracy(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and 0 < value <= 1)


def relative(path: str, start: Optional[str]) -> str:
  return os.path.relpath(path, start) if start else path
