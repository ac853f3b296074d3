"""A grid's results next to published values, with the difference in points.

A spec's `table` may name published numbers for its settings:

    table:
      published:
        - source: "Flower's NIID-Bench baseline (adap/flower@1599d01)"
          measure: best          # best | final: which of ours it compares to
          values: {fedavg_iid: 0.890, fedavg_dirichlet: [0.8809, 0.0029]}

Each source is one column (a value, or [mean, std]) and one difference
column (ours minus published, in percentage points, on the source's
measure). "best" is a run's highest test accuracy over its evaluated rounds
(read from metrics.jsonl), "final" its last one (summary.json): papers and
their reproductions report either, so the table shows both of ours.

The table is written into the results README with the rest of the
generated part, so a rerun of the grid updates the differences too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from typing import Dict, List, Optional, Sequence, Tuple, Union

from fedclf.errors import UserError
from fedclf.results.tables import seeds_covered

MEASURES = ("best", "final")


@dataclasses.dataclass(frozen=True)
class PublishedSource:
  """Published values of one source, keyed by the spec's setting labels."""
  source: str
  measure: str
  values: Dict[str, Tuple[float, Optional[float]]]  # label -> (mean, std)


def parse(table: Dict[str, object], path: str) -> List[PublishedSource]:
  """The spec's `table.published` list; a malformed one is a UserError."""
  entries = table.get("published") or []
  if not isinstance(entries, list):
    raise UserError(f"{path}: table.published must be a list of "
                    f"{{source, measure, values}}")
  return [_parse_source(entry, path) for entry in entries]


def _parse_source(entry, path: str) -> PublishedSource:
  if not isinstance(entry, dict) or not entry.get("source"):
    raise UserError(f"{path}: each table.published entry needs a `source`")
  measure = entry.get("measure", "final")
  if measure not in MEASURES:
    raise UserError(f"{path}: table.published measure must be one of "
                    f"{', '.join(MEASURES)}; got {measure!r}")
  values = entry.get("values")
  if not isinstance(values, dict) or not values:
    raise UserError(f"{path}: table.published `values` must map setting "
                    f"names to accuracies")
  return PublishedSource(str(entry["source"]), measure,
                         {str(k): _value(v, k, path)
                          for k, v in values.items()})


def _value(value, label, path: str) -> Tuple[float, Optional[float]]:
  pair = value if isinstance(value, list) else [value]
  if not 1 <= len(pair) <= 2 or not all(_is_fraction(v) for v in pair):
    raise UserError(f"{path}: table.published value of {label} must be an "
                    f"accuracy in [0, 1] or [mean, std]; got {value!r}")
  return float(pair[0]), (float(pair[1]) if len(pair) == 2 else None)


def _is_fraction(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and 0 <= value <= 1)


def best_round(run_dir: str) -> Optional[Tuple[float, int]]:
  """(highest test accuracy, its round) over a run's evaluated rounds."""
  best = None
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      accuracy = row.get("test_accuracy")
      if accuracy is not None and (best is None or accuracy > best[0]):
        best = (float(accuracy), int(row["round"]))
  return best


def _ours(members: Sequence[Dict]) -> Dict[str, Union[float, str, None]]:
  finals = [m["summary"].get("final_test_accuracy") for m in members]
  bests = [best_round(m["dir"]) for m in members]
  # A diverged seed has no final accuracy but does have a best round (its
  # best before it diverged), as a collapsed run of the references does.
  return {"final": _mean([f for f in finals if f is not None]),
          "final_seeds": seeds_covered(finals),
          "best": _mean([b[0] for b in bests if b is not None]),
          "best_round": _mean([b[1] for b in bests if b is not None])}


def _mean(values: List[float]) -> Optional[float]:
  return statistics.fmean(values) if values else None


def _points(value: Optional[float], std: Optional[float] = None) -> str:
  if value is None:
    return ""
  return f"{100 * value:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def markdown(groups: Dict[str, List[Dict]],
             sources: Sequence[PublishedSource]) -> str:
  """The comparison table (percent, like the papers) of every setting some
  source publishes a value for; '' without sources."""
  labels = [label for label in groups
            if any(label in s.values for s in sources)]
  if not labels:
    return ""
  header = ["setting", "seeds", "ours: final (%)",
            "ours: best (%) (mean round)"]
  for i, source in enumerate(sources, 1):
    header += [f"[{i}] {source.measure} (%)", f"ours − [{i}] (points)"]
  lines = ["## Against published values", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for label in labels:
    lines.append("| " + " | ".join(_row(label, groups[label], sources))
                 + " |")
  lines.append("")
  lines += [f"[{i}] {s.source}; compared with our {s.measure} accuracy."
            for i, s in enumerate(sources, 1)]
  return "\n".join(lines) + "\n"


def _row(label: str, members: Sequence[Dict],
         sources: Sequence[PublishedSource]) -> List[str]:
  ours = _ours(members)
  best = _points(ours["best"])
  if best and ours["best_round"] is not None:
    best += f" ({ours['best_round']:.0f})"
  row = [label, str(len(members)),
         _points(ours["final"]) + ours["final_seeds"], best]
  for source in sources:
    published = source.values.get(label)
    if published is None:
      row += ["", ""]
      continue
    mine = ours[source.measure]
    row.append(_points(*published))
    row.append("" if mine is None else
               f"{100 * (mine - published[0]):+.2f}")
  return row
