"""fedclf plugin: FedAvg with a coordinate-wise median of client updates.

Nothing in fedclf is edited: the module registers an algorithm built from
fedclf's public parts (LocalSGD client work, an Aggregator subclass).
"""

import tensorflow as tf

from fedclf.federated import Aggregator
from fedclf.federated import Algorithm
from fedclf.federated import AlgorithmConfig
from fedclf.federated import LocalSGD
from fedclf.plugin_config import NoParams
from fedclf.registry import ALGORITHMS


class CoordinateMedian(Aggregator):
  """Per coordinate, the median of the reporting clients' updates."""

  name = "coordinate_median"
  has_tff_form = False

  def combine(self, deltas, weights, expected_clients, seed):
    del expected_clients, seed  # Unused.
    kept = [d for d, w in zip(deltas, weights) if float(w) > 0]
    out = []
    for i in range(len(kept[0])):
      stacked = tf.sort(tf.stack([d[i] for d in kept]), axis=0)
      n = len(kept)
      lower, upper = stacked[(n - 1) // 2], stacked[n // 2]
      out.append((lower + upper) / 2.0)
    return out

  def tff_factory(self, expected_clients):
    del expected_clients  # Unused.
    return None  # No tff.aggregators form: the driver runs `combine`.


@ALGORITHMS.register("fedmedian")
def fedmedian(config: AlgorithmConfig, params: NoParams) -> Algorithm:
  del params  # No hyper-parameters of its own.
  return Algorithm("fedmedian", LocalSGD(config), config.server,
                   aggregator=CoordinateMedian())
