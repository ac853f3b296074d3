"""`median`: the coordinate-wise median of the updates (Yin et al. 2018)."""

from __future__ import annotations

import tensorflow as tf

from fedclf.federated.aggregation.votes import active_stacks
from fedclf.federated.aggregators import Aggregator
from fedclf.plugin_config import NoParams
from fedclf.registry import AGGREGATORS


def coordinate_median(stack: tf.Tensor) -> tf.Tensor:
  """The median over the first axis (the mean of the two middle values for
  an even count, as numpy's)."""
  n = tf.shape(stack)[0]
  ordered = tf.sort(stack, axis=0)
  return 0.5 * (tf.gather(ordered, (n - 1) // 2) +
                tf.gather(ordered, n // 2))


class CoordinateMedian(Aggregator):
  """Per coordinate, the median of the reporting clients' values
  (unweighted); fewer than half the clients cannot move it arbitrarily."""

  name = "median"
  has_tff_form = False

  def combine(self, deltas, weights, expected_clients, seed):
    del expected_clients, seed  # Unused.
    return [coordinate_median(s) for s in active_stacks(deltas, weights)]

  def tff_factory(self, expected_clients):
    del expected_clients  # Unused: TFF has no federated median.
    return None


@AGGREGATORS.register("median")
def median(params: NoParams) -> Aggregator:
  """Coordinate-wise median of the updates (Yin et al. 2018)."""
  del params  # Unused.
  return CoordinateMedian()
