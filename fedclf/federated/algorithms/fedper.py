"""FedPer (Arivazhagan et al. 2019): federated encoder, personal heads."""

from __future__ import annotations

from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.config import AlgorithmConfig
from fedclf.federated.personal_work import PersonalPartSGD
from fedclf.plugin_config import NoParams
from fedclf.registry import ALGORITHMS


@ALGORITHMS.register("fedper")
def fedper(config: AlgorithmConfig, params: NoParams) -> Algorithm:
  """FedPer (Arivazhagan et al. 2019): FedAvg of the encoder; each client's
  head (the model's "head" layer) stays on the client, is trained with the
  encoder and never averaged. Personal model: global encoder + own head."""
  del params  # None to read.
  return Algorithm("fedper", PersonalPartSGD(config), config.server)
