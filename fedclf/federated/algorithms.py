"""The table of federated algorithms, each a plugin in `ALGORITHMS`.

An algorithm is data: which client work, which aggregator combines the
client deltas (`aggregators.py`) and which server optimizer applies the
result. Backends (`local`, `tff`)
run any `Algorithm`, so a new one is a factory registered here or in a
plugin module:

    @ALGORITHMS.register("my_alg")
    def my_alg(config: AlgorithmConfig) -> Algorithm:
      return Algorithm("my_alg", client_work=LocalSGD(config),
                       server=config.server)
"""

from __future__ import annotations

import dataclasses

from fedclf.federated.aggregators import Aggregator
from fedclf.federated.aggregators import DpGaussian
from fedclf.federated.client_work import ClientWork
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.client_work import Scaffold
from fedclf.federated.config import AlgorithmConfig
from fedclf.federated.config import ServerOptimizerConfig
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


def build_algorithm(name: str, config: AlgorithmConfig) -> Algorithm:
  """The registered algorithm `name` built for `config`."""
  config.validate()
  return ALGORITHMS.get(name)(config)


@ALGORITHMS.register("fedavg")
def fedavg(config: AlgorithmConfig) -> Algorithm:
  """FedAvg (McMahan et al. 2017): local SGD epochs, example-weighted mean
  of the client models (server SGD with lr 1 by default)."""
  return Algorithm("fedavg", LocalSGD(config), config.server)


@ALGORITHMS.register("fedsgd")
def fedsgd(config: AlgorithmConfig) -> Algorithm:
  """FedSGD: one full-batch gradient per client per round, averaged."""
  return Algorithm("fedsgd", LocalSGD(config), config.server,
                   full_batch=True, single_epoch=True)


@ALGORITHMS.register("fedprox")
def fedprox(config: AlgorithmConfig) -> Algorithm:
  """FedProx (Li et al. 2020): FedAvg plus a proximal term (`prox_mu`)."""
  return Algorithm("fedprox", LocalSGD(config, prox_mu=config.prox_mu),
                   config.server)


def _adaptive(name: str, optimizer: str, config: AlgorithmConfig) -> Algorithm:
  server = dataclasses.replace(config.server, name=optimizer)
  return Algorithm(name, LocalSGD(config), server)


@ALGORITHMS.register("fedavgm")
def fedavgm(config: AlgorithmConfig) -> Algorithm:
  """FedAvgM (Hsu et al. 2019): server momentum on the averaged delta."""
  server = config.server
  if server.momentum == 0.0:
    server = dataclasses.replace(server, momentum=0.9)
  return Algorithm("fedavgm", LocalSGD(config),
                   dataclasses.replace(server, name="momentum"))


@ALGORITHMS.register("fedadam")
def fedadam(config: AlgorithmConfig) -> Algorithm:
  """FedAdam (Reddi et al. 2021)."""
  return _adaptive("fedadam", "adam", config)


@ALGORITHMS.register("fedyogi")
def fedyogi(config: AlgorithmConfig) -> Algorithm:
  """FedYogi (Reddi et al. 2021)."""
  return _adaptive("fedyogi", "yogi", config)


@ALGORITHMS.register("fedadagrad")
def fedadagrad(config: AlgorithmConfig) -> Algorithm:
  """FedAdagrad (Reddi et al. 2021)."""
  return _adaptive("fedadagrad", "adagrad", config)


@ALGORITHMS.register("scaffold")
def scaffold(config: AlgorithmConfig) -> Algorithm:
  """SCAFFOLD (Karimireddy et al. 2020): control variates against drift."""
  return Algorithm("scaffold", Scaffold(config), config.server)


@ALGORITHMS.register("dp_fedavg")
def dp_fedavg(config: AlgorithmConfig) -> Algorithm:
  """DP-FedAvg (McMahan et al. 2018): each update clipped to `dp_clip` in L2,
  Gaussian noise of std `dp_noise_multiplier * dp_clip` on the sum, divided
  by the expected number of clients (user-level DP)."""
  return Algorithm("dp_fedavg", LocalSGD(config), config.server,
                   aggregator=DpGaussian(config.dp_clip,
                                         config.dp_noise_multiplier))


@ALGORITHMS.register("reptile")
def reptile(config: AlgorithmConfig) -> Algorithm:
  """Reptile-style meta-learning (Nichol et al. 2018; Jiang et al. 2019):
  FedAvg whose server step (server_lr, the meta step size) interpolates
  towards the clients, evaluated after `personalization_steps` local
  fine-tuning steps on each client."""
  return Algorithm("reptile", LocalSGD(config), config.server,
                   personalization_steps=max(config.personalization_steps, 1),
                   personalization_lr=(config.personalization_lr or
                                       config.client_lr))
