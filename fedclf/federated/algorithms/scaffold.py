"""SCAFFOLD (Karimireddy et al. 2020); its client work is
`client_work.Scaffold`."""

from __future__ import annotations

from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.client_work import Scaffold
from fedclf.federated.config import AlgorithmConfig
from fedclf.plugin_config import NoParams
from fedclf.registry import ALGORITHMS

@ALGORITHMS.register("scaffold")
def scaffold(config: AlgorithmConfig, params: NoParams) -> Algorithm:
  """SCAFFOLD (Karimireddy et al. 2020): control variates against drift."""
  del params  # None to read.
  return Algorithm("scaffold", Scaffold(config), config.server)
