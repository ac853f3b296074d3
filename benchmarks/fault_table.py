"""The fault-injection table: its Markdown and the merging of runs.

benchmarks/fault_injection.py runs the faults; this renders its JSON
record (its cells, and the runs that made them) as results/reliability.md,
and merges a run into an earlier record (--merge). No flags: tests import
it.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List

from benchmarks import fault_runs as fr
from benchmarks.fault_cases import FAULTS


def cell_text(cell: Dict[str, object]) -> str:
  if cell["status"] != "ran":
    return str(cell["status"])
  trials = cell["trials"]
  passed = sum(t["ok"] for t in trials)
  count = f"{len(trials)} trial{'' if len(trials) == 1 else 's'}"
  if passed == len(trials):
    return f"{count}: nothing lost, same final result"
  first = next(t for t in trials if not t["ok"])
  return (f"{count}, **{len(trials) - passed} failed**: "
          f"{fr.cell_safe(first['detail'])}")


def _run_line(run: Dict[str, object]) -> str:
  dirty = ""
  if run.get("dirty"):
    files = run.get("dirty_files")
    dirty = (f" (uncommitted changes to {', '.join(files)})" if files else
             " (uncommitted changes)")
  return (f"`{run['command']}`: commit `{run['commit']}`{dirty}, "
          f"{run['started_utc']}, {run['machine']}, "
          f"{float(run.get('seconds') or 0) / 60:.1f} minutes; trials per "
          f"cell {run['trials']} ({run['slow_trials']} for the slow "
          f"binaries), kill9: {run['kills']} kills per trial, seed "
          f"{run['seed']}")


def missing_cells(record: Dict[str, object]) -> List[tuple]:
  """(binary, fault) of every applicable cell no run has filled."""
  done = {(c["binary"], c["fault"]) for c in record["cells"]}
  return [(b.name, f) for b in fr.BINARIES.values() for f in FAULTS
          if fr.applies(b, f) and (b.name, f) not in done]


def completing_command(record: Dict[str, object], out: str) -> str:
  """The command that fills the cells `missing_cells` lists."""
  missing = missing_cells(record)
  # The slow ones last: a run stopped early has filled the most rows.
  binaries = sorted((b for b in fr.BINARIES
                     if any(m[0] == b for m in missing)),
                    key=lambda b: fr.BINARIES[b].slow)
  faults = [f for f in FAULTS if any(m[1] == f for m in missing)]
  run = record["runs"][-1]
  parts = ["python -m benchmarks.fault_injection",
           f"--trials={run['trials']}", f"--binaries={','.join(binaries)}"]
  if len(faults) < len(FAULTS):
    parts.append(f"--faults={','.join(faults)}")
  return " ".join(parts + ["--merge", f"--out={out}"])


def markdown(record: Dict[str, object], out: str) -> str:
  """The table of every binary x fault from `record`: its cells and the
  runs that made them."""
  binaries, faults = list(fr.BINARIES.values()), list(FAULTS)
  cells = {(c["binary"], c["fault"]): c for c in record["cells"]}
  pending = {"status": "not run yet"}
  runs = record["runs"]
  lines = [
      "# Reliability: binaries x faults", "",
      "Written by benchmarks/fault_injection.py (`make faults`); every "
      f"trial's details are in `{os.path.basename(record['json'])}`. What "
      "each fault does and what a trial must show to pass: "
      "benchmarks/fault_injection.py's docstring. Results are compared bit "
      "for bit: every number of every summary.json and metrics.jsonl row, "
      "timing fields left out. md5 of a folder: over its sorted relative "
      "paths and file bytes.", "",
      f"- {'runs' if len(runs) > 1 else 'run'} (each cell's commit is in "
      "the JSON):"]
  lines += [f"  - {_run_line(r)}" for r in runs]
  missing = missing_cells(record)
  if missing:
    rows = sorted({m[0] for m in missing}, key=list(fr.BINARIES).index)
    lines.append(
        f"- **partial**: {len(missing)} cells not run yet (rows "
        f"{', '.join(rows)}); `{completing_command(record, out)}` runs "
        "them and merges them into this table")
  lines += [
      "",
      "| binary | " + " | ".join(faults) + " |",
      "|---" * (len(faults) + 1) + "|"]
  for b in binaries:
    lines.append(f"| {b.name} | " + " | ".join(
        cell_text(cells.get((b.name, f), pending if fr.applies(b, f)
                            else {"status": "n/a"}))
        for f in faults) + " |")
  lines += ["", "## Binaries", ""]
  lines += [f"- {b.name}: `{b.describe()}`" for b in binaries]
  failures = [(c, t) for c in record["cells"] for t in c["trials"]
              if not t["ok"]]
  if failures:
    lines += ["", "## Failures", ""]
    for c, t in failures:
      lines.append(f"- {c['binary']} / {c['fault']}: "
                   f"{fr.cell_safe(t['detail'])}")
  return "\n".join(lines) + "\n"


def runs_of(old: Dict[str, object]) -> List[Dict[str, object]]:
  """An earlier JSON's runs (one written before runs were listed: its own
  fields)."""
  if "runs" in old:
    return list(old["runs"])
  return [{k: old.get(k) for k in ("command", "commit", "dirty",
                                   "started_utc", "machine", "trials",
                                   "slow_trials", "kills", "seed",
                                   "seconds")}]


def merged(old: Dict[str, object], record: Dict[str, object]
           ) -> Dict[str, object]:
  """`record` with `old`'s cells that it does not repeat, and its runs."""
  ran = {(c["binary"], c["fault"]) for c in record["cells"]}
  kept = [dict(c, commit=c.get("commit", old.get("commit")))
          for c in old["cells"] if (c["binary"], c["fault"]) not in ran]
  return dict(record, cells=kept + record["cells"],
              runs=runs_of(old) + record["runs"],
              references={**old.get("references", {}),
                          **record.get("references", {})})


def read_json(path: str) -> Dict[str, object]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise fr.HarnessError(f"cannot read {path}: {e}") from None
