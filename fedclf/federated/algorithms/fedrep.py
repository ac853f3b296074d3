"""FedRep (Collins et al. 2021): shared representation, personal heads
trained first."""

from __future__ import annotations

import dataclasses

from fedclf.errors import UserError
from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.config import AlgorithmConfig
from fedclf.federated.personal_work import FedRepWork
from fedclf.registry import ALGORITHMS


@dataclasses.dataclass(frozen=True)
class FedRepParams:
  fedrep_head_epochs: int = dataclasses.field(
      default=5, metadata={"help": "FedRep: passes over the round's batches "
                                   "training the head (encoder frozen) "
                                   "before one pass training the encoder."})

  def validate(self) -> None:
    if self.fedrep_head_epochs < 1:
      raise UserError(f"fedrep_head_epochs must be >= 1, got "
                      f"{self.fedrep_head_epochs}")


@ALGORITHMS.register("fedrep", params=FedRepParams)
def fedrep(config: AlgorithmConfig, params: FedRepParams) -> Algorithm:
  """FedRep (Collins et al. 2021): each client's head stays on the client;
  a round trains it for `fedrep_head_epochs` passes over the client's
  batches with the encoder frozen, then the encoder for one pass with the
  head frozen; the encoders are averaged. Personal model: global encoder +
  own head."""
  return Algorithm("fedrep", FedRepWork(config, params.fedrep_head_epochs),
                   config.server)
