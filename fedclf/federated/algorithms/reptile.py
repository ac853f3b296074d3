"""Reptile-style federated meta-learning."""

from __future__ import annotations

import dataclasses

from fedclf.errors import UserError
from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.config import AlgorithmConfig
from fedclf.registry import ALGORITHMS

@dataclasses.dataclass(frozen=True)
class ReptileParams:
  personalization_steps: int = dataclasses.field(
      default=5, metadata={"help": "local fine-tuning steps before "
                                   "evaluation."})
  personalization_lr: float = dataclasses.field(
      default=0.0, metadata={"help": "fine-tuning lr (0 = client_lr)."})

  def validate(self) -> None:
    if self.personalization_steps < 0 or self.personalization_lr < 0:
      raise UserError("personalization_steps and personalization_lr must be "
                      ">= 0")


@ALGORITHMS.register("reptile", params=ReptileParams)
def reptile(config: AlgorithmConfig, params: ReptileParams) -> Algorithm:
  """Reptile-style meta-learning (Nichol et al. 2018; Jiang et al. 2019):
  FedAvg whose server step (server_lr, the meta step size) interpolates
  towards the clients, evaluated after `personalization_steps` local
  fine-tuning steps on each client."""
  return Algorithm("reptile", LocalSGD(config), config.server,
                   personalization_steps=max(params.personalization_steps, 1),
                   personalization_lr=(params.personalization_lr or
                                       config.client_lr))
