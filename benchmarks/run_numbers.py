"""Every number a run folder holds, by its path, for telling whether two runs
of one computation agree: the refactor parity check, the fault suite and the
kill-and-resume tests compare runs this way.

Keys are `<run>/summary.json:<path>` and `<run>/metrics.jsonl[i]:<path>`
(with `<run>/` the run's folder relative to the folder read, none for the
folder itself); nested keys join by '/', list items by `[i]`. Strings are
left out (names, paths and commits differ between checkouts without any
metric changing), booleans count as 0/1, and fields that measure the
machine or the process rather than the computation are left out by name.
"""

from __future__ import annotations

import json
import os
import re
from typing import Callable, Dict

# Fields that measure the machine or the process, not the computation: time,
# memory, TFF worker process ids, and an export's serving version (a
# timestamp).
_MACHINE_FIELD = re.compile(
    r"seconds|per_second|elapsed|duration|timestamp|time_|_time|^time$|"
    r"wall|rss|memory|mib|(^|_)pids?(_|$)|^version$")


def measures_machine(key: str) -> bool:
  """Whether a field name, or any part of a flattened key, measures the
  machine. Comparisons apply it again to recorded keys, so a recording made
  before a pattern was added compares without that field."""
  parts = re.split(r"[:/]", re.sub(r"\[\d+\]", "", key))
  return any(_MACHINE_FIELD.search(p) for p in parts if p)


def flatten(value, prefix: str, out: Dict[str, float],
            skip: Callable[[str], bool] = measures_machine) -> None:
  """Puts the numeric leaves of a JSON value into `out`, keyed by their
  path below `prefix`; a field whose name `skip` accepts is left out."""
  if isinstance(value, dict):
    for key, item in value.items():
      if skip(str(key)):
        continue
      # A file prefix ends in ':' ("summary.json:"); nested keys join by '/'.
      joined = (f"{prefix}{key}" if not prefix or prefix.endswith(":")
                else f"{prefix}/{key}")
      flatten(item, joined, out, skip)
  elif isinstance(value, list):
    for i, item in enumerate(value):
      flatten(item, f"{prefix}[{i}]", out, skip)
  elif isinstance(value, (bool, int, float)):
    out[prefix] = float(value)


def _read_rows(path: str, name: str):
  with open(path) as f:
    if name == "summary.json":
      return [json.load(f)]
    return [json.loads(line) for line in f if line.strip()]


def folder_numbers(folder: str,
                   skip: Callable[[str], bool] = measures_machine
                   ) -> Dict[str, float]:
  """Every number of every summary.json and metrics.jsonl below `folder`
  (with metrics.jsonl's row count). Runs moved aside (`*.old-*`) are not the
  result and are not read; a file that does not parse is one key naming the
  error, so that it compares as a difference rather than crashing."""
  found: Dict[str, float] = {}
  for root, dirs, files in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if ".old-" not in d)
    run = os.path.relpath(root, folder)
    run = "" if run == "." else run + "/"
    for name in ("summary.json", "metrics.jsonl"):
      if name not in files:
        continue
      try:
        rows = _read_rows(os.path.join(root, name), name)
      except ValueError as e:
        found[f"{run}{name}:unreadable ({e})"] = 1.0
        continue
      if name == "summary.json":
        flatten(rows[0], f"{run}{name}:", found, skip)
        continue
      found[f"{run}{name}:rows"] = float(len(rows))
      for i, row in enumerate(rows):
        flatten(row, f"{run}{name}[{i}]:", found, skip)
  return found
