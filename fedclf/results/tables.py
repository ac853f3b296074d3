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


def _is_federated(run: Dict) -> bool:
  return "algorithm" in run["summary"]


def results_table(runs: List[Dict], title: str) -> str:
  """Centralized and federated runs, each kind in its own table."""
  central = [r for r in runs if not _is_federated(r)]
  federated = [r for r in runs if _is_federated(r)]
  parts = [f"# {title}", ""]
  if central:
    parts.append(_centralized_rows(central))
  if federated:
    parts.append(_federated_rows(federated))
  parts.append(_commands(runs))
  return "\n".join(parts)


def centralized_table(runs: List[Dict], title: str) -> str:
  return "\n".join([f"# {title}", "", _centralized_rows(runs),
                    _commands(runs)])


def _federated_rows(runs: List[Dict]) -> str:
  lines = ["| run | algorithm | dataset | partition | clients (per round) | "
           "rounds | test accuracy | macro F1 | rounds to target | client "
           "accuracy p10 | train seconds |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for run in runs:
    s = run["summary"]
    target = s.get("target_accuracy")
    reached = s.get("rounds_to_target")
    to_target = ("" if not target else
                 f"{reached} (to {target:.3f})" if reached else
                 f"not reached (to {target:.3f})")
    lines.append(
        f"| {run['name']} | {s.get('algorithm')} | "
        f"{s.get('dataset', {}).get('name', '')} | {s.get('partitioner')} | "
        f"{s.get('num_clients')} ({s.get('clients_per_round')}) | "
        f"{s.get('rounds_run')} | {_fmt(s.get('final_test_accuracy'))} | "
        f"{_fmt(s.get('final_test_macro_f1'))} | {to_target} | "
        f"{_fmt(s.get('final_client_accuracy_p10'))} | "
        f"{_fmt(s.get('train_seconds'), 0)} |")
  return "\n".join(lines) + "\n"


def _centralized_rows(runs: List[Dict]) -> str:
  lines = ["| run | dataset | model | test accuracy | macro F1 | epochs | "
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
  return "\n".join(lines) + "\n"


def _commands(runs: List[Dict]) -> str:
  lines = ["Commands (each run's exact command line, from its config.json):",
           ""]
  for run in runs:
    git = run["config"].get("git", {})
    lines.append(f"- `{run['name']}` (commit {git.get('commit') or 'n/a'}"
                 f"{', dirty tree' if git.get('dirty') else ''}):")
    lines.append(f"  `{_command(run['config'])}`")
  return "\n".join(lines) + "\n"
