"""Per-FedAvg (Fallah et al. 2020), first-order MAML."""

from __future__ import annotations

import dataclasses

from fedclf.errors import UserError
from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.config import AlgorithmConfig
from fedclf.federated.personal_work import PerFedAvgWork
from fedclf.registry import ALGORITHMS


@dataclasses.dataclass(frozen=True)
class PerFedAvgParams:
  perfedavg_alpha: float = dataclasses.field(
      default=0.01, metadata={"help": "Per-FedAvg: inner (adaptation) step "
                                      "size, also the evaluation's "
                                      "fine-tuning lr."})
  perfedavg_beta: float = dataclasses.field(
      default=0.0, metadata={"help": "Per-FedAvg: outer (meta) step size "
                                     "(0 = client_lr)."})

  def validate(self) -> None:
    if not self.perfedavg_alpha > 0 or self.perfedavg_beta < 0:
      raise UserError("perfedavg_alpha must be > 0 and perfedavg_beta >= 0")


@ALGORITHMS.register("per_fedavg", params=PerFedAvgParams)
def per_fedavg(config: AlgorithmConfig, params: PerFedAvgParams) -> Algorithm:
  """Per-FedAvg (Fallah et al. 2020), first-order MAML: each local step
  w' = w - alpha grad L(w; D1), w <- w - beta grad L(w'; D2) on two
  consecutive batches; the global model is averaged as in FedAvg and each
  client's personal model is it after one SGD step at alpha on its data
  (--finetune_steps changes the number)."""
  beta = params.perfedavg_beta or config.client_lr
  return Algorithm("per_fedavg",
                   PerFedAvgWork(config, params.perfedavg_alpha, beta),
                   config.server, personalization_steps=1,
                   personalization_lr=params.perfedavg_alpha)
