"""FedProx (Li et al. 2020): FedAvg with a proximal term."""

from __future__ import annotations

import dataclasses

from fedclf.errors import UserError
from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.config import AlgorithmConfig
from fedclf.registry import ALGORITHMS

@dataclasses.dataclass(frozen=True)
class FedProxParams:
  prox_mu: float = dataclasses.field(
      default=0.01, metadata={"help": "proximal term weight."})

  def validate(self) -> None:
    if self.prox_mu < 0:
      raise UserError(f"prox_mu must be >= 0, got {self.prox_mu}")


@ALGORITHMS.register("fedprox", params=FedProxParams)
def fedprox(config: AlgorithmConfig, params: FedProxParams) -> Algorithm:
  """FedProx (Li et al. 2020): FedAvg plus a proximal term (`prox_mu`)."""
  return Algorithm("fedprox", LocalSGD(config, prox_mu=params.prox_mu),
                   config.server)
