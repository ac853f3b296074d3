"""A faulty client for the fault-injection suite (benchmarks/fault_injection).

  python -m simulations.federated --plugin=benchmarks.fault_plugins \
      --algorithm=nan_client_clipped --nan_client=0 --clip_norm=5 ...

Registers the algorithm `nan_client_clipped`: FedAvg whose client
`--nan_client` trains on a loss multiplied by NaN in every round it is
sampled (its update becomes NaN, as a client with a broken sensor or a
numerical blow-up would send), aggregated by a robust rule, an
example-weighted mean of the updates each clipped to L2 norm
`--clip_norm`. fedclf drops a non-finite update before aggregation and
counts it in metrics.jsonl (`clients_nonfinite`); the suite checks that the
run finishes with finite metrics and that the count is recorded.

Only a test aid: nothing in fedclf imports it.
"""

import dataclasses
import importlib.util
import os
import sys

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated import Algorithm
from fedclf.federated import AlgorithmConfig
from fedclf.federated import LocalSGD
from fedclf.registry import ALGORITHMS

EXAMPLE_PLUGIN = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "examples", "fedclf_normbound.py")


def _clipped_mean():
  """The example plugin's aggregator (examples/fedclf_normbound.py): the
  example-weighted mean of updates each clipped to an L2 bound, the same
  rule rather than a copy. Loaded as the module `fedclf_normbound`, as
  `--plugin=fedclf_normbound` would."""
  module = sys.modules.get("fedclf_normbound")
  if module is None:
    spec = importlib.util.spec_from_file_location("fedclf_normbound",
                                                  EXAMPLE_PLUGIN)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fedclf_normbound"] = module
    spec.loader.exec_module(module)
  return module.NormBoundedMean


# client_work.LocalSGD derives each step's seed from the client's
# (rounds.client_seed: [run seed, round * 1_000_003 + client]) as
# [seed[0], seed[1] * 100_003 + step]: the client id is recoverable inside
# the traced objective, which has no other way to know whose data it sees.
_STEP_FACTOR = 100_003
_ROUND_FACTOR = 1_000_003


@dataclasses.dataclass(frozen=True)
class NanClientParams:
  nan_client: int = dataclasses.field(
      default=0, metadata={"help": "The client whose update becomes NaN."})
  clip_norm: float = dataclasses.field(
      default=5.0, metadata={"help": "L2 bound of each client's update."})

  def validate(self) -> None:
    if self.nan_client < 0:
      raise UserError(f"nan_client must be >= 0, got {self.nan_client}")
    if not self.clip_norm > 0:
      raise UserError(f"clip_norm must be > 0, got {self.clip_norm}")


def poisoned(objective, client: int):
  """`objective` whose loss is NaN for `client` (finite for the others)."""

  def wrapped(model, images, labels, mask, seed=None):
    loss, hits, count = objective(model, images, labels, mask, seed)
    if seed is None:
      return loss, hits, count
    cid = (seed[1] // _STEP_FACTOR) % _ROUND_FACTOR
    # A factor, not tf.where(is_target, loss * nan, loss): the gradient of
    # the unselected branch would be 0 * nan = nan for every client.
    factor = tf.where(tf.equal(cid, client), tf.constant(float("nan")),
                      tf.constant(1.0))
    return loss * factor, hits, count

  return wrapped


class NanClientSGD(LocalSGD):
  """LocalSGD whose objective, whatever the simulation sets, is poisoned
  for one client."""

  def __init__(self, config: AlgorithmConfig, client: int):
    super().__init__(config)
    self.client = int(client)
    self.objective = poisoned(self.objective, self.client)

  def with_objective(self, objective):
    return super().with_objective(poisoned(objective, self.client))


@ALGORITHMS.register("nan_client_clipped", params=NanClientParams)
def nan_client_clipped(config: AlgorithmConfig,
                       params: NanClientParams) -> Algorithm:
  return Algorithm("nan_client_clipped",
                   NanClientSGD(config, params.nan_client), config.server,
                   aggregator=_clipped_mean()(params.clip_norm))
