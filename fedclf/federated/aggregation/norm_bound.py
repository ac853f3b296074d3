"""`norm_bound`: each update clipped to an L2 norm, then the weighted mean
(Sun et al. 2019, "Can you really backdoor federated learning?")."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated.aggregators import Aggregator
from fedclf.federated.aggregators import global_norm
from fedclf.federated.aggregators import weighted_mean
from fedclf.registry import AGGREGATORS


@dataclasses.dataclass(frozen=True)
class NormBoundParams:
  clip_norm: float = dataclasses.field(
      default=1.0, metadata={"help": "L2 norm each client's update is "
                                     "clipped to before the mean."})

  def validate(self) -> None:
    if not self.clip_norm > 0:
      raise UserError(f"clip_norm must be > 0, got {self.clip_norm}")


class NormBoundedMean(Aggregator):
  """Example-weighted mean of the updates, each scaled to L2 norm at most
  `clip_norm`; on TFF, `tff.aggregators.clipping_factory` around the mean."""

  name = "norm_bound"

  def __init__(self, clip_norm: float):
    self.clip_norm = float(clip_norm)

  def combine(self, deltas, weights, expected_clients, seed):
    del expected_clients, seed  # Unused.
    clipped = []
    for delta in deltas:
      scale = tf.minimum(1.0, self.clip_norm /
                         tf.maximum(global_norm(delta), 1e-12))
      clipped.append([scale * t for t in delta])
    return weighted_mean(clipped, weights)

  def tff_factory(self, expected_clients):
    del expected_clients  # Unused.
    import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
    return tff.aggregators.clipping_factory(self.clip_norm,
                                            tff.aggregators.MeanFactory())


@AGGREGATORS.register("norm_bound", params=NormBoundParams)
def norm_bound(params: NormBoundParams) -> Aggregator:
  """Norm bounding (Sun et al. 2019): updates clipped to `clip_norm`."""
  return NormBoundedMean(params.clip_norm)
