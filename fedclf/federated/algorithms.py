"""The table of federated algorithms, each a plugin in `ALGORITHMS`.

An algorithm is data: which client work, which aggregator combines the
client deltas (`aggregators.py`) and which server optimizer applies the
result. Backends (`local`, `tff`)
run any `Algorithm`, so a new one is a factory registered here or in a
plugin module. Its own hyper-parameters are a frozen dataclass registered
with it (each field becomes a flag of the binaries, see
`fedclf.plugin_config`); the factory gets the shared `AlgorithmConfig` and
an instance of that dataclass (`NoParams()` for an algorithm without one):

    @dataclasses.dataclass(frozen=True)
    class MyParams:
      my_mu: float = dataclasses.field(default=0.1,
                                       metadata={"help": "What it does."})

    @ALGORITHMS.register("my_alg", params=MyParams)
    def my_alg(config: AlgorithmConfig, params: MyParams) -> Algorithm:
      return Algorithm("my_alg", LocalSGD(config, prox_mu=params.my_mu),
                       config.server)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fedclf.federated.aggregators import Aggregator
from fedclf.federated.aggregators import DpGaussian
from fedclf.federated.client_work import ClientWork
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.client_work import Scaffold
from fedclf.federated.config import AlgorithmConfig
from fedclf.federated.config import ServerOptimizerConfig
from fedclf.errors import UserError
from fedclf.plugin_config import NoParams
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


@ALGORITHMS.register("fedavg")
def fedavg(config: AlgorithmConfig, params: NoParams) -> Algorithm:
  """FedAvg (McMahan et al. 2017): local SGD epochs, example-weighted mean
  of the client models (server SGD with lr 1 by default)."""
  del params  # None to read.
  return Algorithm("fedavg", LocalSGD(config), config.server)


@ALGORITHMS.register("fedsgd")
def fedsgd(config: AlgorithmConfig, params: NoParams) -> Algorithm:
  """FedSGD: one full-batch gradient per client per round, averaged."""
  del params  # None to read.
  return Algorithm("fedsgd", LocalSGD(config), config.server,
                   full_batch=True, single_epoch=True)


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


def _adaptive(name: str, optimizer: str, config: AlgorithmConfig) -> Algorithm:
  server = dataclasses.replace(config.server, name=optimizer)
  return Algorithm(name, LocalSGD(config), server)


@ALGORITHMS.register("fedavgm")
def fedavgm(config: AlgorithmConfig, params: NoParams) -> Algorithm:
  """FedAvgM (Hsu et al. 2019): server momentum on the averaged delta
  (`--server_momentum`, shared with --server_optimizer=momentum; 0 means
  0.9 here)."""
  del params  # None to read.
  server = config.server
  if server.momentum == 0.0:
    server = dataclasses.replace(server, momentum=0.9)
  return Algorithm("fedavgm", LocalSGD(config),
                   dataclasses.replace(server, name="momentum"))


@ALGORITHMS.register("fedadam")
def fedadam(config: AlgorithmConfig, params: NoParams) -> Algorithm:
  """FedAdam (Reddi et al. 2021)."""
  del params  # None to read.
  return _adaptive("fedadam", "adam", config)


@ALGORITHMS.register("fedyogi")
def fedyogi(config: AlgorithmConfig, params: NoParams) -> Algorithm:
  """FedYogi (Reddi et al. 2021)."""
  del params  # None to read.
  return _adaptive("fedyogi", "yogi", config)


@ALGORITHMS.register("fedadagrad")
def fedadagrad(config: AlgorithmConfig, params: NoParams) -> Algorithm:
  """FedAdagrad (Reddi et al. 2021)."""
  del params  # None to read.
  return _adaptive("fedadagrad", "adagrad", config)


@ALGORITHMS.register("scaffold")
def scaffold(config: AlgorithmConfig, params: NoParams) -> Algorithm:
  """SCAFFOLD (Karimireddy et al. 2020): control variates against drift."""
  del params  # None to read.
  return Algorithm("scaffold", Scaffold(config), config.server)


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
