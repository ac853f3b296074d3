"""Accuracy-per-round plots of federated runs, and per-client box plots.

Every figure is drawn in the one results style (figure_style). Accuracy
curves mark the run's target accuracy, zoom the y axis on the region the
results are read from (where the curves end and the target lies), shade
the spread over seeds and move the legend out of the axes when it would
hide curves.
"""

from __future__ import annotations

import json
import os
import textwrap
from typing import Dict, List, Optional, Sequence, Tuple

from fedclf.results import figure_style
from fedclf.results.record import read_metrics_file

# (rounds, values) of one run.
Curve = Tuple[List[float], List[float]]

# What the shaded band around a mean curve spans; said in the legend.
BAND_NOTE = "line: mean over seeds; band: min-max over seeds"

# Reference lines (published numbers, a centralized baseline) are grey;
# several are told apart by their dashes.
REFERENCE_DASHES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))

# Curves whose lengths differ this much (FedSGD's 1000 rounds against
# FedAvg's 20) get a log round axis, or the short ones are squeezed into
# the first pixels.
LOG_ROUNDS_RATIO = 10


# The x axis of accuracy curves besides the round: the megabytes (10^6
# bytes) the clients uploaded up to and including the round.
UPLOAD_MEGABYTES = "upload_megabytes"
UPLOAD_MEGABYTES_LABEL = "cumulative uploaded MB (10^6 bytes)"


def read_curve(run_dir: str, key: str = "test_accuracy",
               x: str = "round") -> Curve:
  """(rounds, values) of `key` from a run's metrics.jsonl; empty for a run
  that logged no round (one that diverged in its first). With
  x=UPLOAD_MEGABYTES the first list holds the cumulative uploaded
  megabytes at each value instead of its round."""
  rounds, values = [], []
  uploaded = 0.0
  # A run killed mid-append has a cut last line: it is left out.
  for row in read_metrics_file(os.path.join(run_dir, "metrics.jsonl")):
    uploaded += row.get("upload_bytes", 0) / 1e6
    if key in row and "round" in row:
      rounds.append(uploaded if x == UPLOAD_MEGABYTES else row["round"])
      values.append(row[key])
  return rounds, values


def _read_json(run_dir: str, name: str) -> Dict:
  path = os.path.join(run_dir, name)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def run_target(run_dir: str) -> Optional[float]:
  """The --target_accuracy a run was given (its config.json), or None.

  Read from the flags, not summary.json, whose `target_accuracy` is the
  target *domain's* accuracy in a domain-adaptation run.
  """
  flags = _read_json(run_dir, "config.json").get("config", {}).get(
      "flags", {})
  target = flags.get("target_accuracy")
  return float(target) if isinstance(target, (int, float)) and target else None


def _set_title(ax, title: str) -> None:
  # Spec titles carry the paper's numbers and run past the figure's width.
  ax.set_title("\n".join(textwrap.fill(part, 72)
                         for part in title.split("\n")))


def mean_and_band(curves: Sequence[Curve]):
  """(rounds, mean, low, high) over the rounds every curve evaluated: the
  mean and the min-max spread of the seeds; None when they share none."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  series = [dict(zip(*c)) for c in curves]
  common = (sorted(set.intersection(*(set(s) for s in series)))
            if series else [])
  if not common:
    return None
  values = np.array([[s[r] for r in common] for s in series], dtype=float)
  return common, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def accuracy_ylim(means: Sequence[Sequence[float]],
                  lines: Sequence[float]) -> Tuple[float, float]:
  """The y range where accuracy curves are read: from a little below the
  lowest of every curve's final and halfway values and any target or
  reference line, to a little above the highest value, within [0, 1].
  Early rounds, and brief collapses, fall off the bottom: on a 0-1 axis
  the ends of runs that all finish near 0.99 are one smeared line."""
  ends = [v for m in means if len(m) for v in (m[-1], m[len(m) // 2])]
  every = [v for m in means for v in m] + list(lines)
  if not ends and not lines:
    return 0.0, 1.0
  low, high = min(ends + list(lines)), max(every)
  below = max(0.5 * (high - low), 0.02)
  above = max(0.25 * (high - low), 0.005)
  return max(0.0, low - below), min(1.0, high + above)


def draw_round_curves(ax, groups: Dict[str, List[Curve]],
                      lines: Optional[Dict[str, float]] = None,
                      target: Optional[float] = None,
                      notes: Optional[Dict[str, str]] = None,
                      xlabel: Optional[str] = None) -> None:
  """Draws one mean curve per group of seed curves on `ax`, a shaded
  min-max band for groups of more than one seed, `lines` (label -> value,
  e.g. a centralized baseline or a published number) as dashed
  horizontals, the target as a solid black line, and sets the axes'
  ranges and legend. `notes` (group -> text) go into the legend, such as
  a divergence; those groups do not set the y range. The x values are
  rounds unless `xlabel` names what they are."""
  lines, notes = dict(lines or {}), dict(notes or {})
  means, ends, seeded = [], [], False
  for i, (label, curves) in enumerate(groups.items()):
    drawn = mean_and_band(curves)
    if drawn is None:
      continue
    rounds, mean, low, high = drawn
    text = f"{label} (n={len(curves)})" if len(curves) > 1 else label
    if label in notes:
      text += f" ({notes[label]})"
    else:
      means.append(mean)
    style = figure_style.series_style(i)
    ax.plot(rounds, mean, label=text, **style)
    ends.append(rounds[-1])
    if len(curves) > 1:
      seeded = True
      ax.fill_between(rounds, low, high, color=style["color"], alpha=0.25,
                      linewidth=0)
  for j, (label, value) in enumerate(lines.items()):
    ax.axhline(value, linestyle=REFERENCE_DASHES[j % len(REFERENCE_DASHES)],
               color="0.35", linewidth=1.2, label=f"{label} ({value:.3f})")
  if target:
    ax.axhline(target, color="black", linewidth=1.2,
               label=f"target accuracy {target:g}")
  ax.set_ylim(*accuracy_ylim(means, list(lines.values()) +
                             ([target] if target else [])))
  _round_axis(ax, ends, xlabel)
  entries = len(ax.get_legend_handles_labels()[1])
  figure_style.place_legend(ax, entries)
  if seeded and ax.get_legend() is not None:
    ax.get_legend().set_title(BAND_NOTE, prop={"size": 7})


def _round_axis(ax, ends: Sequence[float],
                xlabel: Optional[str] = None) -> None:
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  if xlabel is not None:  # not rounds (e.g. megabytes): no integer ticks
    if ends and min(ends) > 0 and max(ends) >= LOG_ROUNDS_RATIO * min(ends):
      ax.set_xscale("log")
      xlabel += " (log scale)"
    ax.set_xlabel(xlabel)
    return
  if ends and min(ends) >= 1 and max(ends) >= LOG_ROUNDS_RATIO * min(ends):
    ax.set_xscale("log")
    ax.set_xlabel("round (log scale)")
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())  # 10, not 10^1
  else:
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(
        ticker.MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def _write_curves(path: str, title: str, ylabel: str,
                  groups: Dict[str, List[Curve]],
                  lines: Optional[Dict[str, float]], target: Optional[float],
                  notes: Optional[Dict[str, str]] = None,
                  xlabel: Optional[str] = None):
  wide = len(groups) + len(lines or {}) + bool(target) > (
      figure_style.MAX_LEGEND_ENTRIES_INSIDE)
  with figure_style.results_figure(path, (9.5 if wide else 7, 4.5)) as fig:
    ax = fig.add_subplot(1, 1, 1)
    draw_round_curves(ax, groups, lines, target, notes, xlabel)
    ax.set_ylabel(ylabel)
    _set_title(ax, title)
  return fig


def plot_round_curves(curves: Dict[str, Curve], path: str, title: str,
                      references: Optional[Dict[str, float]] = None,
                      ylabel: str = "test accuracy (fraction)",
                      target: Optional[float] = None) -> None:
  """One line per run (name -> (rounds, values)); `references` are drawn as
  horizontal dashed lines (e.g. the centralized baseline), `target` as a
  solid one."""
  _write_curves(path, title, ylabel,
                {name: [curve] for name, curve in curves.items()},
                references, target)


def plot_seed_bands(groups: Dict[str, list], path: str, title: str,
                    key: str = "test_accuracy",
                    target: Optional[float] = None,
                    references: Optional[Dict[str, float]] = None,
                    x: str = "round"):
  """Mean curve per group of run folders (label -> run dirs, seeds of one
  setting) with a shaded min-max band over its seeds, on the rounds every
  seed evaluated. `target` defaults to the runs' own --target_accuracy
  (when they share one); `references` (label -> accuracy, e.g. published
  numbers) are dashed lines; `x` is "round" or UPLOAD_MEGABYTES. Returns
  the written matplotlib Figure."""
  if target is None:
    targets = {run_target(d) for dirs in groups.values() for d in dirs}
    targets.discard(None)
    target = targets.pop() if len(targets) == 1 else None
  notes = {}
  for label, run_dirs in groups.items():
    diverged = [_read_json(d, "summary.json").get("diverged_at_round")
                for d in run_dirs]
    if any(diverged):
      notes[label] = f"diverged at round {min(r for r in diverged if r)}"
  curves = {label: [read_curve(d, key, x) for d in run_dirs]
            for label, run_dirs in groups.items()}
  return _write_curves(path, title, f"{key.replace('_', ' ')} (fraction)",
                       curves, references, target, notes,
                       UPLOAD_MEGABYTES_LABEL if x == UPLOAD_MEGABYTES
                       else None)


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
  size = (max(5.0, 0.7 * len(data) + 2), 4.5)
  with figure_style.results_figure(path, size) as fig:
    ax = fig.add_subplot(1, 1, 1)
    ax.boxplot(list(data.values()), showmeans=True)
    ax.set_xticks(range(1, len(data) + 1))
    ax.set_xticklabels(list(data), rotation=30, ha="right")
    ax.set_ylabel("accuracy on the client's own data (fraction)")
    ax.grid(False, axis="x")
    _set_title(ax, title + "\nper client, final model, pooled over seeds; "
               "box: quartiles, whiskers: 1.5 IQR, triangle: mean")
  return True
