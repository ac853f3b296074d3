"""Ditto (Li et al. 2021): regularized personal models."""

from __future__ import annotations

import dataclasses

from fedclf.errors import UserError
from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.config import AlgorithmConfig
from fedclf.federated.personal_work import DittoWork
from fedclf.registry import ALGORITHMS


@dataclasses.dataclass(frozen=True)
class DittoParams:
  ditto_lambda: float = dataclasses.field(
      default=0.1, metadata={"help": "Ditto: weight of lambda/2 |v_i - w|^2 "
                                     "pulling personal models to the "
                                     "global one."})

  def validate(self) -> None:
    if self.ditto_lambda < 0:
      raise UserError(f"ditto_lambda must be >= 0, got {self.ditto_lambda}")


@ALGORITHMS.register("ditto", params=DittoParams)
def ditto(config: AlgorithmConfig, params: DittoParams) -> Algorithm:
  """Ditto (Li et al. 2021): the global model trains as FedAvg; each client
  also keeps a personal model v_i (client state), trained on the same
  batches on its loss + ditto_lambda/2 |v_i - w_global|^2. Personal model:
  v_i."""
  return Algorithm("ditto", DittoWork(config, params.ditto_lambda),
                   config.server)
