"""FedBN (Li et al. 2021): BatchNorm layers stay on the clients."""

from __future__ import annotations

from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.config import AlgorithmConfig
from fedclf.federated.personal import batch_norm_mask
from fedclf.federated.personal_work import PersonalPartSGD
from fedclf.plugin_config import NoParams
from fedclf.registry import ALGORITHMS


@ALGORITHMS.register("fedbn")
def fedbn(config: AlgorithmConfig, params: NoParams) -> Algorithm:
  """FedBN (Li et al. 2021): FedAvg of every weight except the BatchNorm
  layers' (scale, offset, moving statistics), which stay on each client.
  Needs a model with BatchNorm (--norm=batch). Personal model: the global
  weights + the client's BatchNorm layers."""
  del params  # None to read.
  return Algorithm("fedbn", PersonalPartSGD(config, batch_norm_mask),
                   config.server)
