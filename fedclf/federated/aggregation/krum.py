"""`krum` and `multi_krum` (Blanchard et al. 2017): keep the updates that
lie closest to many others.

Client i's score is the sum of its squared L2 distances to its n - f - 2
nearest other updates, for n reporting clients of which up to f are
Byzantine (f = floor(`byzantine_fraction` * n)). Krum takes the update of
the lowest score; Multi-Krum averages the m lowest-scored ones (scores
computed once, the common simplification of the paper's repeated Krum).
"""

from __future__ import annotations

import dataclasses
import math
from typing import List

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated.aggregation.votes import active_stacks
from fedclf.federated.aggregation.votes import count
from fedclf.federated.aggregators import Aggregator
from fedclf.registry import AGGREGATORS

_FRACTION_HELP = ("share of the reporting clients assumed Byzantine "
                  "(f = floor(share * n)).")


@dataclasses.dataclass(frozen=True)
class KrumParams:
  byzantine_fraction: float = dataclasses.field(
      default=0.2, metadata={"help": _FRACTION_HELP})

  def validate(self) -> None:
    if not 0.0 <= self.byzantine_fraction < 0.5:
      raise UserError(f"byzantine_fraction must be in [0, 0.5), got "
                      f"{self.byzantine_fraction}")


@dataclasses.dataclass(frozen=True)
class MultiKrumParams(KrumParams):
  multi_krum_selected: int = dataclasses.field(
      default=0, metadata={"help": "updates averaged (m); 0 = n - f."})

  def validate(self) -> None:
    super().validate()
    if self.multi_krum_selected < 0:
      raise UserError(f"multi_krum_selected must be >= 0 (0 = n - f), got "
                      f"{self.multi_krum_selected}")


def krum_scores(flat: tf.Tensor, byzantine: int) -> tf.Tensor:
  """Each row's Krum score: the sum of its squared distances to its
  n - f - 2 nearest other rows (at least 1, at most n - 1)."""
  n = int(flat.shape[0])
  sq = tf.reduce_sum(tf.square(flat), axis=1)
  dist = sq[:, None] + sq[None, :] - 2.0 * tf.matmul(flat, flat,
                                                     transpose_b=True)
  dist = tf.maximum(dist, 0.0)
  neighbours = max(1, min(n - byzantine - 2, n - 1))
  # Itself (distance 0) sorts first; the next `neighbours` are the others.
  nearest = tf.sort(dist, axis=1)[:, 1:1 + neighbours]
  return tf.reduce_sum(nearest, axis=1)


def krum_selection(stacks: List[tf.Tensor], fraction: float,
                   selected: int) -> List[int]:
  """Indices (into the active clients) of the `selected` lowest Krum
  scores (0: n - f), lowest first; ties go to the lower index."""
  n = count(stacks)
  if n <= 2:  # no neighbour to compare with but the other one
    return list(range(n))[:max(1, selected or n)]
  byzantine = int(math.floor(fraction * n + 1e-9))
  flat = tf.concat([tf.reshape(s, [n, -1]) for s in stacks], axis=1)
  scores = krum_scores(flat, byzantine).numpy()
  m = selected or n - byzantine
  order = sorted(range(n), key=lambda i: (scores[i], i))
  return order[:max(1, min(m, n))]


class MultiKrum(Aggregator):
  """The unweighted mean of the `selected` updates of lowest Krum score
  (Krum: selected = 1; 0: n - f)."""

  has_tff_form = False

  def __init__(self, name: str, byzantine_fraction: float, selected: int):
    self.name = name
    self.byzantine_fraction = float(byzantine_fraction)
    self.selected = int(selected)

  def combine(self, deltas, weights, expected_clients, seed):
    del expected_clients, seed  # Unused.
    stacks = active_stacks(deltas, weights)
    chosen = krum_selection(stacks, self.byzantine_fraction, self.selected)
    return [tf.reduce_mean(tf.gather(s, chosen), axis=0) for s in stacks]

  def tff_factory(self, expected_clients):
    del expected_clients  # Unused: TFF has no federated Krum.
    return None


@AGGREGATORS.register("krum", params=KrumParams)
def krum(params: KrumParams) -> Aggregator:
  """Krum (Blanchard et al. 2017): the update closest to its neighbours."""
  return MultiKrum("krum", params.byzantine_fraction, 1)


@AGGREGATORS.register("multi_krum", params=MultiKrumParams)
def multi_krum(params: MultiKrumParams) -> Aggregator:
  """Multi-Krum: the mean of the m updates of lowest Krum score."""
  return MultiKrum("multi_krum", params.byzantine_fraction,
                   params.multi_krum_selected)
