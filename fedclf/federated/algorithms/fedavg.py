"""FedAvg and the variants that differ from it only in the server step:
FedSGD, FedAvgM, FedAdam, FedYogi, FedAdagrad."""

from __future__ import annotations

import dataclasses

from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.config import AlgorithmConfig
from fedclf.plugin_config import NoParams
from fedclf.registry import ALGORITHMS

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
