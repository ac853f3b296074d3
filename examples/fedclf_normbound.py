"""A fedclf plugin in one file: FedAvg with norm-bounded client updates.

Each client's model update is scaled down to L2 norm at most `norm_bound`
before the example-weighted mean (Sun et al. 2019, "Can you really backdoor
federated learning?"), so that a few broken or malicious clients can move
the global model only so far per round. The hyper-parameter is a field of
`NormBoundParams`, registered with the factory; fedclf's binaries turn it
into the flag `--norm_bound`. Nothing in fedclf is edited:

  PYTHONPATH=examples python -m simulations.federated \
      --plugin=fedclf_normbound --algorithm=normbound --norm_bound=0.5 \
      --dataset=digits --model=mlp

It runs on both backends: `--backend=local` calls `combine`,
`--backend=tff` runs the equivalent `tff.aggregators` factory.
"""

import dataclasses

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated import Aggregator
from fedclf.federated import Algorithm
from fedclf.federated import AlgorithmConfig
from fedclf.federated import LocalSGD
from fedclf.federated.aggregators import global_norm
from fedclf.federated.aggregators import weighted_mean
from fedclf.registry import ALGORITHMS


@dataclasses.dataclass(frozen=True)
class NormBoundParams:
  norm_bound: float = dataclasses.field(
      default=1.0,
      metadata={"help": "L2 bound of each client's model update."})

  def validate(self) -> None:
    if not self.norm_bound > 0:
      raise UserError(f"norm_bound must be > 0, got {self.norm_bound}")


class NormBoundedMean(Aggregator):
  """Example-weighted mean of the updates, each clipped to L2 `bound`."""

  name = "norm_bounded_mean"

  def __init__(self, bound: float):
    self.bound = float(bound)

  def combine(self, deltas, weights, expected_clients, seed):
    del expected_clients, seed  # Unused.
    clipped = []
    for delta in deltas:
      scale = tf.minimum(1.0, self.bound / tf.maximum(global_norm(delta),
                                                      1e-12))
      clipped.append([scale * t for t in delta])
    return weighted_mean(clipped, weights)

  def tff_factory(self, expected_clients):
    del expected_clients  # Unused.
    # Imported only on the tff backend: TFF takes ~50 s to load.
    import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
    return tff.aggregators.clipping_factory(self.bound,
                                            tff.aggregators.MeanFactory())


@ALGORITHMS.register("normbound", params=NormBoundParams)
def normbound(config: AlgorithmConfig, params: NormBoundParams) -> Algorithm:
  return Algorithm("normbound", LocalSGD(config), config.server,
                   aggregator=NormBoundedMean(params.norm_bound))
