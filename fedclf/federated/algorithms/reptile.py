"""Reptile-style federated meta-learning."""

from __future__ import annotations

import dataclasses

from fedclf.errors import UserError
from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.personal_work import ReptileWork
from fedclf.federated.config import AlgorithmConfig
from fedclf.registry import ALGORITHMS

@dataclasses.dataclass(frozen=True)
class ReptileParams:
  personalization_steps: int = dataclasses.field(
      default=5, metadata={"help": "local fine-tuning steps before "
                                   "evaluation."})
  personalization_lr: float = dataclasses.field(
      default=0.0, metadata={"help": "fine-tuning lr (0 = client_lr)."})
  reptile_inner_steps: int = dataclasses.field(
      default=0, metadata={"help": "Reptile: SGD steps per client and round, "
                                   "cycling through its batches (0 = the "
                                   "round's local epochs)."})

  def validate(self) -> None:
    if self.personalization_steps < 0 or self.personalization_lr < 0:
      raise UserError("personalization_steps and personalization_lr must be "
                      ">= 0")
    if self.reptile_inner_steps < 0:
      raise UserError(f"reptile_inner_steps must be >= 0, got "
                      f"{self.reptile_inner_steps}")


@ALGORITHMS.register("reptile", params=ReptileParams)
def reptile(config: AlgorithmConfig, params: ReptileParams) -> Algorithm:
  """Reptile-style meta-learning (Nichol et al. 2018; Jiang et al. 2019).

  Its meta step differs from FedAvg's mean in two ways: each client (a
  task) runs `reptile_inner_steps` SGD steps (0: the local epochs), and
  the server interpolates towards the clients' models with every task
  weighted equally, phi <- phi + server_lr * mean_i(W_i - phi) (FedAvg
  weights clients by their example counts). Evaluated after
  `personalization_steps` fine-tuning steps on each client's training part
  (--client_test_fraction; 0.2 when not given)."""
  return Algorithm("reptile",
                   ReptileWork(config, params.reptile_inner_steps),
                   config.server,
                   personalization_steps=max(params.personalization_steps, 1),
                   personalization_lr=(params.personalization_lr or
                                       config.client_lr))
