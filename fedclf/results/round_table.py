"""How fast federated runs learn, against a reference setting: accuracy at
chosen rounds and at the end, and the rounds each setting needs to reach
the reference's final accuracy (the pretraining-for-FL table of issue
#20: does an SSL-initialised FedAvg get there in half the rounds?).

A spec asks for it with, e.g.,

    table: {accuracy_at_rounds: [10, 50], reference: fedavg_random_init}

where `reference` is a setting (the run name its seeds share). Runs that
also trained centrally on the same examples (--centralized_epochs) add
that row.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

from fedclf.errors import UserError
from fedclf.results.curves import read_curve
from fedclf.results.tables import mean_std


@dataclasses.dataclass(frozen=True)
class RoundTableSpec:
  rounds: Tuple[int, ...]
  reference: str


def parse(table: Dict[str, object], path: str) -> Optional[RoundTableSpec]:
  """The spec's round table, None when it asks for none; bad values are
  one-line UserErrors."""
  rounds = table.get("accuracy_at_rounds")
  reference = table.get("reference")
  if rounds is None and reference is None:
    return None
  if (not isinstance(rounds, list) or not rounds or
      not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1
              for r in rounds)):
    raise UserError(f"{path}: table.accuracy_at_rounds must be a list of "
                    f"rounds >= 1, e.g. [10, 50]; got {rounds!r}")
  if not isinstance(reference, str) or not reference:
    raise UserError(f"{path}: table.reference must name the setting the "
                    "others are compared with (its runs' common name)")
  return RoundTableSpec(tuple(sorted(set(rounds))), reference)


def accuracy_at(curve: Tuple[Sequence[float], Sequence[float]],
                round_num: int) -> Optional[float]:
  """Test accuracy at the last evaluation at or before `round_num`; None
  when the run ended before that round or had no evaluation by then."""
  rounds, values = curve
  if not rounds or rounds[-1] < round_num:
    return None
  before = [v for r, v in zip(rounds, values) if r <= round_num]
  return before[-1] if before else None


def rounds_to(curve: Tuple[Sequence[float], Sequence[float]],
              accuracy: float) -> Optional[int]:
  """The first evaluated round at or above `accuracy`; None if never."""
  for r, v in zip(*curve):
    if v >= accuracy:
      return int(r)
  return None


def markdown(groups: Dict[str, List[Dict]], spec: RoundTableSpec,
             path: str) -> str:
  """The table for `groups` (setting -> its runs, each with "dir" and
  "summary"); the reference setting first."""
  if spec.reference not in groups:
    raise UserError(f"{path}: table.reference {spec.reference!r} is not a "
                    f"finished setting; have: {', '.join(groups)}")
  curves = {label: [read_curve(m["dir"]) for m in members]
            for label, members in groups.items()}
  finals = [c[1][-1] for c in curves[spec.reference] if c[1]]
  if not finals:
    raise UserError(f"{path}: the reference runs logged no accuracy")
  target = sum(finals) / len(finals)
  header = (["setting", "seeds"] +
            [f"accuracy at round {r}" for r in spec.rounds] +
            ["final accuracy", "final − reference (points)",
             f"rounds to {target:.4f} (the reference's final)"])
  order = [spec.reference] + [g for g in groups if g != spec.reference]
  rows = []
  for label in order:
    runs = curves[label]
    row = [label, str(len(runs))]
    row += [mean_std([accuracy_at(c, r) for c in runs]) for r in spec.rounds]
    ends = [c[1][-1] for c in runs if c[1]]
    row.append(mean_std(ends))
    row.append(mean_std([100 * (e - target) for e in ends], digits=2))
    reached = [rounds_to(c, target) for c in runs]
    hit = [r for r in reached if r is not None]
    cell = mean_std([float(r) for r in hit], counts=True)
    if len(hit) < len(runs):
      cell = (f"{cell} ({len(hit)}/{len(runs)} reached)" if hit else
              f"not reached (0/{len(runs)})")
    row.append(cell)
    rows.append(row)
  central = [m["summary"]["centralized_test_accuracy"]
             for m in groups[spec.reference]
             if m["summary"].get("centralized_test_accuracy") is not None]
  if central:
    epochs = groups[spec.reference][0]["summary"].get("centralized_epochs")
    row = [f"centralized on the same labelled examples ({epochs} epochs)",
           str(len(central))] + [""] * len(spec.rounds)
    row += [mean_std(central),
            mean_std([100 * (c - target) for c in central], digits=2), ""]
    rows.append(row)
  lines = ["## Accuracy by round, against " + spec.reference, "",
           "Test accuracy (fraction) at the last evaluation at or before "
           "each round, mean ± sample std over seeds; rounds to the "
           "reference setting's mean final accuracy count the first "
           "evaluated round at or above it.", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines) + "\n"
