"""Markdown tables from run directories (their config.json and summary.json)."""

from __future__ import annotations

import json
import os
import shlex
from typing import Dict, List

from fedclf.errors import UserError


def load_runs(runs_dir: str) -> List[Dict]:
  """Every finished run (a folder with summary.json) below `runs_dir`."""
  if not os.path.isdir(runs_dir):
    raise UserError(f"runs directory {runs_dir} does not exist")
  runs = []
  for root, _, files in sorted(os.walk(runs_dir)):
    if "summary.json" in files and "config.json" in files:
      with open(os.path.join(root, "summary.json")) as f:
        summary = json.load(f)
      with open(os.path.join(root, "config.json")) as f:
        config = json.load(f)
      runs.append({"name": os.path.relpath(root, runs_dir), "dir": root,
                   "summary": summary, "config": config})
  if not runs:
    raise UserError(f"no finished runs (summary.json) under {runs_dir}")
  return runs


def _command(config: Dict) -> str:
  argv = list(config.get("command") or [])
  if not argv:
    return ""
  module = argv[0]
  if module.endswith(".py"):
    parts = os.path.normpath(module).split(os.sep)
    module = ".".join(parts[-2:])[:-3]
  args = [a for a in argv[1:] if not a.startswith("--resume")]
  return "python -m " + " ".join([module] + [shlex.quote(a) for a in args])


def _fmt(value, digits=4):
  if isinstance(value, float):
    return f"{value:.{digits}f}"
  return "" if value is None else str(value)


def centralized_table(runs: List[Dict], title: str) -> str:
  lines = [f"# {title}", "",
           "| run | dataset | model | test accuracy | macro F1 | epochs | "
           "train seconds | examples/s |",
           "|---|---|---|---|---|---|---|---|"]
  for run in runs:
    s = run["summary"]
    lines.append(
        f"| {run['name']} | {s.get('dataset', {}).get('name', '')} | "
        f"{s.get('model', '')} | {_fmt(s.get('test_accuracy'))} | "
        f"{_fmt(s.get('test_macro_f1'))} | {_fmt(s.get('epochs_run'))} | "
        f"{_fmt(s.get('train_seconds'), 0)} | "
        f"{_fmt(s.get('examples_per_second'), 0)} |")
  lines += ["", "Commands (each run's exact command line, from its "
            "config.json):", ""]
  for run in runs:
    git = run["config"].get("git", {})
    lines.append(f"- `{run['name']}` (commit {git.get('commit') or 'n/a'}"
                 f"{', dirty tree' if git.get('dirty') else ''}):")
    lines.append(f"  `{_command(run['config'])}`")
  return "\n".join(lines) + "\n"
