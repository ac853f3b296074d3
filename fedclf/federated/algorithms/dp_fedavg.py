"""DP-FedAvg (McMahan et al. 2018): user-level differential privacy."""

from __future__ import annotations

import dataclasses

from fedclf.errors import UserError
from fedclf.federated.aggregators import DpGaussian
from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.config import AlgorithmConfig
from fedclf.registry import ALGORITHMS

@dataclasses.dataclass(frozen=True)
class DpFedAvgParams:
  dp_noise_multiplier: float = dataclasses.field(
      default=1.0, metadata={"help": "noise / clip."})
  dp_clip: float = dataclasses.field(
      default=0.1, metadata={"help": "L2 clip of client updates."})

  def validate(self) -> None:
    if self.dp_noise_multiplier < 0 or not self.dp_clip > 0:
      raise UserError("dp_noise_multiplier must be >= 0 and dp_clip > 0")


@ALGORITHMS.register("dp_fedavg", params=DpFedAvgParams)
def dp_fedavg(config: AlgorithmConfig, params: DpFedAvgParams) -> Algorithm:
  """DP-FedAvg (McMahan et al. 2018): each update clipped to `dp_clip` in L2,
  Gaussian noise of std `dp_noise_multiplier * dp_clip` on the sum, divided
  by the expected number of clients (user-level DP)."""
  return Algorithm("dp_fedavg", LocalSGD(config), config.server,
                   aggregator=DpGaussian(params.dp_clip,
                                         params.dp_noise_multiplier))
