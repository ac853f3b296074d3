"""`Algorithm`, what every federated algorithm plugin builds, and
`build_algorithm`, which builds a registered one."""

from __future__ import annotations

import dataclasses
from typing import Any

from fedclf.federated.aggregators import Aggregator
from fedclf.federated.client_work import ClientWork
from fedclf.federated.config import AlgorithmConfig
from fedclf.federated.config import ServerOptimizerConfig
from fedclf.plugin_config import resolve_params
from fedclf.registry import ALGORITHMS


@dataclasses.dataclass(frozen=True)
class Algorithm:
  name: str
  client_work: ClientWork
  server: ServerOptimizerConfig
  aggregator: Aggregator = Aggregator()
  full_batch: bool = False  # each client's whole dataset is one batch
  single_epoch: bool = False
  personalization_steps: int = 0  # >0: evaluate after local fine-tuning
  personalization_lr: float = 0.0

  def __post_init__(self):
    # The server learning rate's default depends on the optimizer chosen.
    object.__setattr__(self, "server", self.server.resolved())


def build_algorithm(name: str, config: AlgorithmConfig,
                    params: Any = None) -> Algorithm:
  """The registered algorithm `name` built for `config` and its own
  hyper-parameters `params` (its registered params dataclass; None: the
  defaults)."""
  factory = ALGORITHMS.get(name)
  config.validate()
  return factory(config, resolve_params(ALGORITHMS, name, params))


