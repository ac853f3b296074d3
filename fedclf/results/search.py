"""Hyper-parameter search inside an experiment spec, chosen on validation.

A spec with a `search` section runs trials over a declared space, picks the
trial with the best *validation* metric (never a test metric), then reruns
the chosen values on the final seeds, whose test accuracy is what the table
reports:

    binary: baselines.centralized
    out_dir: results/search/mnist_cnn
    common: {dataset: mnist, model: cnn, epochs: 3, val_fraction: 0.1}
    search:
      method: random             # or grid (every combination)
      trials: 8                  # random only
      seed: 0                    # seeds the sampling, not the runs
      objective: best_val_accuracy   # a summary.json key; maximized
      space:
        lr: {log_uniform: [1.0e-4, 1.0e-2]}
        batch_size: [32, 64, 128]      # a list: choose among values
        dropout: {uniform: [0.0, 0.5]}
        epochs: {int_uniform: [2, 5]}
      final_seeds: [0, 1, 2]

Trials live in <out_dir>/search/trial_NN, the choice in
<out_dir>/search.json, the final runs in <out_dir>/best_seedS.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fedclf.errors import UserError

METHODS = ("grid", "random")
DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform")
SEARCH_KEYS = {"method", "trials", "seed", "objective", "space", "final_seeds",
               "mode"}


@dataclasses.dataclass(frozen=True)
class Dimension:
  """One searched flag: a list of choices or a {distribution: [low, high]}."""
  flag: str
  choices: Tuple = ()
  distribution: str = ""
  low: float = 0.0
  high: float = 0.0

  def sample(self, rng: np.random.Generator):
    if self.choices:
      return self.choices[int(rng.integers(len(self.choices)))]
    if self.distribution == "int_uniform":
      return int(rng.integers(int(self.low), int(self.high) + 1))
    if self.distribution == "log_uniform":
      value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
    else:
      value = rng.uniform(self.low, self.high)
    # Short flag values and folder-friendly names; 4 significant digits is
    # finer than any learning-rate grid.
    return float(f"{value:.4g}")


@dataclasses.dataclass(frozen=True)
class SearchSpec:
  method: str
  space: Tuple[Dimension, ...]
  objective: str
  trials: int = 0
  seed: int = 0
  maximize: bool = True
  final_seeds: Tuple[int, ...] = (0,)

  def trial_values(self) -> List[Dict[str, object]]:
    """The flag values of every trial, in order (deterministic)."""
    if self.method == "grid":
      return [dict(zip([d.flag for d in self.space], combo))
              for combo in itertools.product(*(d.choices for d in self.space))]
    rng = np.random.default_rng(self.seed)
    return [{d.flag: d.sample(rng) for d in self.space}
            for _ in range(self.trials)]


def _dimension(path: str, flag: str, value) -> Dimension:
  if isinstance(value, list):
    if not value:
      raise UserError(f"{path}: search space {flag!r} has no values")
    return Dimension(flag, choices=tuple(value))
  if isinstance(value, dict) and len(value) == 1:
    (kind, bounds), = value.items()
    if kind not in DISTRIBUTIONS:
      raise UserError(f"{path}: search space {flag!r}: unknown distribution "
                      f"{kind!r}; use one of {', '.join(DISTRIBUTIONS)}")
    if (not isinstance(bounds, list) or len(bounds) != 2 or
        not all(isinstance(b, (int, float)) for b in bounds) or
        not bounds[0] < bounds[1]):
      raise UserError(f"{path}: search space {flag!r}: {kind} needs "
                      f"[low, high] with low < high")
    if kind == "log_uniform" and bounds[0] <= 0:
      raise UserError(f"{path}: search space {flag!r}: log_uniform needs "
                      f"low > 0")
    return Dimension(flag, distribution=kind, low=float(bounds[0]),
                     high=float(bounds[1]))
  raise UserError(f"{path}: search space {flag!r} must be a list of values "
                  f"or {{distribution: [low, high]}}")


def parse_search(path: str, raw) -> SearchSpec:
  """Validates a spec's `search` section; errors are one-line UserErrors."""
  if not isinstance(raw, dict):
    raise UserError(f"{path}: search must be a mapping")
  unknown = sorted(set(raw) - SEARCH_KEYS)
  if unknown:
    raise UserError(f"{path}: unknown search key {unknown[0]!r}")
  method = raw.get("method", "random")
  if method not in METHODS:
    raise UserError(f"{path}: search method must be grid or random, got "
                    f"{method!r}")
  objective = str(raw.get("objective", ""))
  if not objective:
    raise UserError(f"{path}: search needs an objective (a validation "
                    f"metric in summary.json, e.g. best_val_accuracy)")
  if "test" in objective or "val" not in objective:
    raise UserError(f"{path}: search objective {objective!r} must be a "
                    f"validation metric (containing 'val'), never a test "
                    f"metric")
  space = raw.get("space")
  if not isinstance(space, dict) or not space:
    raise UserError(f"{path}: search needs a non-empty space")
  dims = tuple(_dimension(path, flag, value) for flag, value in space.items())
  if "seed" in space:
    raise UserError(f"{path}: seed cannot be searched; list final_seeds")
  trials = int(raw.get("trials", 0))
  if method == "grid":
    continuous = [d.flag for d in dims if not d.choices]
    if continuous:
      raise UserError(f"{path}: grid search needs lists of values; "
                      f"{continuous[0]!r} is a distribution")
  elif trials < 1:
    raise UserError(f"{path}: random search needs trials >= 1")
  mode = raw.get("mode", "max")
  if mode not in ("max", "min"):
    raise UserError(f"{path}: search mode must be max or min")
  seeds = raw.get("final_seeds", [0])
  if (not isinstance(seeds, list) or not seeds or
      not all(isinstance(s, int) for s in seeds)):
    raise UserError(f"{path}: final_seeds must be a non-empty list of ints")
  return SearchSpec(method=method, space=dims, objective=objective,
                    trials=trials, seed=int(raw.get("seed", 0)),
                    maximize=mode == "max", final_seeds=tuple(seeds))


def trial_name(index: int) -> str:
  return os.path.join("search", f"trial_{index:02d}")


def _objective_value(summary_path: str, objective: str) -> Optional[float]:
  if not os.path.exists(summary_path):
    return None
  with open(summary_path) as f:
    summary = json.load(f)
  if objective not in summary:
    raise UserError(f"{summary_path} has no {objective!r}; does the binary "
                    f"hold out a validation split (--val_fraction)?")
  value = summary[objective]
  return None if value is None else float(value)


def choose(search: SearchSpec, out_dir: str) -> Dict:
  """Reads every trial's objective and picks the best finished trial.

  Returns the record written to <out_dir>/search.json: the trials (values,
  objective or None when unfinished/failed) and the chosen values.
  """
  trials = []
  for i, values in enumerate(search.trial_values()):
    name = trial_name(i)
    value = _objective_value(os.path.join(out_dir, name, "summary.json"),
                             search.objective)
    trials.append({"name": name, "values": values, "objective": value})
  scored = [t for t in trials if t["objective"] is not None and
            math.isfinite(t["objective"])]
  if not scored:
    raise UserError(f"no finished search trial under {out_dir}/search; "
                    f"cannot choose hyper-parameters")
  pick = max if search.maximize else min
  best = pick(scored, key=lambda t: t["objective"])
  return {"method": search.method, "objective": search.objective,
          "mode": "max" if search.maximize else "min",
          "trials": trials, "best": best["name"],
          "chosen": best["values"], "best_objective": best["objective"],
          "final_seeds": list(search.final_seeds)}


def markdown(record: Dict) -> str:
  """The search table: one row per trial, the chosen one in bold."""
  flags = list(record["chosen"])
  lines = [f"## Hyper-parameter search ({record['method']}, "
           f"{len(record['trials'])} trials, chosen on "
           f"`{record['objective']}`, {record['mode']}imized)", "",
           "| trial | " + " | ".join(flags) + f" | {record['objective']} |",
           "|---|" + "---|" * (len(flags) + 1)]
  for t in record["trials"]:
    value = ("not finished" if t["objective"] is None
             else f"{t['objective']:.4f}")
    cells = [os.path.basename(t["name"])] + [
        str(t["values"][f]) for f in flags] + [value]
    if t["name"] == record["best"]:
      cells = [f"**{c}**" for c in cells]
    lines.append("| " + " | ".join(cells) + " |")
  chosen = ", ".join(f"{k}={v}" for k, v in record["chosen"].items())
  lines += ["", f"Chosen: {chosen} (validation {record['best_objective']:.4f})"
            f"; the table above reports the test set of the final runs with "
            f"these values, seeds {record['final_seeds']}.", ""]
  return "\n".join(lines)


def final_flags(common: Dict[str, object], chosen: Dict[str, object],
                seeds: Sequence[int]) -> List[Tuple[str, Dict[str, object]]]:
  return [(f"best_seed{s}", {**common, **chosen, "seed": s}) for s in seeds]
