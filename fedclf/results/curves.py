"""Accuracy-per-round plots of federated runs against centralized lines."""

from __future__ import annotations

import json
import os
import textwrap
from typing import Dict, Optional

from fedclf.results.record import atomic_output
from fedclf.results.record import read_metrics_file


def read_curve(run_dir: str, key: str = "test_accuracy"):
  """(rounds, values) of `key` from a run's metrics.jsonl; empty for a run
  that logged no round (one that diverged in its first)."""
  rounds, values = [], []
  # A run killed mid-append has a cut last line: it is left out.
  for row in read_metrics_file(os.path.join(run_dir, "metrics.jsonl")):
    if key in row and "round" in row:
      rounds.append(row["round"])
      values.append(row[key])
  return rounds, values


def _set_title(ax, title: str) -> None:
  # Spec titles carry the paper's numbers and run past the figure's width.
  ax.set_title(textwrap.fill(title, 72), fontsize=10)


def plot_round_curves(curves: Dict[str, tuple], path: str, title: str,
                      references: Optional[Dict[str, float]] = None,
                      ylabel: str = "test accuracy") -> None:
  """One line per run (name -> (rounds, values)); `references` are drawn as
  horizontal dashed lines (e.g. the centralized baseline)."""
  # Without pyplot: its global state would leak into callers.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(7, 4.5))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  for name, (rounds, values) in curves.items():
    ax.plot(rounds, values, label=name, linewidth=1.8)
  for i, (name, value) in enumerate((references or {}).items()):
    ax.axhline(value, linestyle="--", color=f"C{len(curves) + i}",
               label=f"{name} ({value:.3f})")
  ax.set_xlabel("round")
  ax.set_ylabel(ylabel)
  _set_title(ax, title)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic_output(path) as tmp:
    fig.savefig(tmp, dpi=120)


def plot_seed_bands(groups: Dict[str, list], path: str, title: str,
                    key: str = "test_accuracy") -> None:
  """Mean curve per group of run folders with a shaded ±1 std band over
  seeds (rounds every seed evaluated)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(7, 4.5))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  for i, (label, run_dirs) in enumerate(groups.items()):
    series = [dict(zip(*read_curve(d, key))) for d in run_dirs]
    common = sorted(set.intersection(*(set(s) for s in series))) if series \
        else []
    if not common:
      continue
    values = np.array([[s[r] for r in common] for s in series])
    mean, std = values.mean(axis=0), values.std(axis=0)
    ax.plot(common, mean, label=f"{label} (n={len(run_dirs)})",
            color=f"C{i}", linewidth=1.8)
    if len(run_dirs) > 1:
      ax.fill_between(common, mean - std, mean + std, color=f"C{i}",
                      alpha=0.2)
  ax.set_xlabel("round")
  ax.set_ylabel(key.replace("_", " "))
  _set_title(ax, title)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right", fontsize="small")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic_output(path) as tmp:
    fig.savefig(tmp, dpi=120)


def read_client_accuracy(run_dir: str) -> Optional[list]:
  """Per-client accuracies of a run's last evaluation, or None."""
  path = os.path.join(run_dir, "client_accuracy.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return list(json.load(f)["accuracy"])


def plot_client_accuracy(groups: Dict[str, list], path: str,
                         title: str) -> bool:
  """Box plot per group of run folders: the accuracy of the final global
  model on each evaluated client's own data, pooled over seeds. Returns
  False (and writes nothing) when no run recorded per-client accuracies
  (--per_client_eval=0)."""
  data = {}
  for label, run_dirs in groups.items():
    values = [v for d in run_dirs for v in (read_client_accuracy(d) or [])]
    if values:
      data[label] = values
  if not data:
    return False
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(max(5.0, 1.1 * len(data) + 2), 4.5))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  ax.boxplot(list(data.values()), showmeans=True)
  ax.set_xticks(range(1, len(data) + 1))
  ax.set_xticklabels(list(data), rotation=30, ha="right", fontsize=8)
  ax.set_ylabel("accuracy on the client's own data")
  _set_title(ax, title)
  ax.grid(alpha=0.3, axis="y")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic_output(path) as tmp:
    fig.savefig(tmp, dpi=100)
  return True
