"""`trimmed_mean`: per coordinate, the mean without the largest and
smallest values (Yin et al. 2018)."""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated.aggregation.votes import active_stacks
from fedclf.federated.aggregation.votes import count
from fedclf.federated.aggregators import Aggregator
from fedclf.registry import AGGREGATORS


@dataclasses.dataclass(frozen=True)
class TrimmedMeanParams:
  trim_fraction: float = dataclasses.field(
      default=0.2, metadata={"help": "share of the reporting clients' values "
                                     "dropped at each end, per coordinate."})

  def validate(self) -> None:
    if not 0.0 <= self.trim_fraction < 0.5:
      raise UserError(f"trim_fraction must be in [0, 0.5), got "
                      f"{self.trim_fraction}")


def trimmed(n: int, fraction: float) -> int:
  """Values dropped at each end: floor(fraction * n), leaving at least one."""
  k = int(math.floor(fraction * n + 1e-9))
  return max(0, min(k, (n - 1) // 2))


class TrimmedMean(Aggregator):
  """Per coordinate, the unweighted mean of the values left after dropping
  the floor(trim_fraction * n) largest and smallest of the n reporting
  clients."""

  name = "trimmed_mean"
  has_tff_form = False

  def __init__(self, trim_fraction: float):
    self.trim_fraction = float(trim_fraction)

  def combine(self, deltas, weights, expected_clients, seed):
    del expected_clients, seed  # Unused.
    stacks = active_stacks(deltas, weights)
    n = count(stacks)
    k = trimmed(n, self.trim_fraction)
    return [tf.reduce_mean(tf.sort(s, axis=0)[k:n - k], axis=0)
            for s in stacks]

  def tff_factory(self, expected_clients):
    del expected_clients  # Unused: TFF has no federated trimmed mean.
    return None


@AGGREGATORS.register("trimmed_mean", params=TrimmedMeanParams)
def trimmed_mean(params: TrimmedMeanParams) -> Aggregator:
  """Coordinate-wise trimmed mean (`trim_fraction` each side)."""
  return TrimmedMean(params.trim_fraction)
