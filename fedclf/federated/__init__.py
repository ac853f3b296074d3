"""Federated learning: algorithms (plugins), backends and the simulation loop.

    from fedclf.federated import FederatedRunConfig, run_federated

Algorithms register in `fedclf.registry.ALGORITHMS` (see `algorithms/`),
backends in `fedclf.registry.BACKENDS` (see `backends/`): the `local`
backend runs them in-process, the `tff` backend on TensorFlow Federated's
runtime (imported only when asked for: TFF takes ~50 s to load).
Aggregators usable with any algorithm (`--aggregator`: median, Krum, ...)
register in `fedclf.registry.AGGREGATORS` (see `aggregation/`); malicious
clients and their attacks are `AttackConfig` (`attack_config.py`).
"""

# Registers the built-in backends (config validation looks them up).
from fedclf.federated import backends  # noqa: F401  pylint: disable=unused-import
# Registers the built-in aggregators (`--aggregator`).
from fedclf.federated import aggregation  # noqa: F401  pylint: disable=unused-import
from fedclf.federated.algorithms import Algorithm
from fedclf.federated.algorithms import build_algorithm
from fedclf.federated.algorithms import DpFedAvgParams
from fedclf.federated.algorithms import FedProxParams
from fedclf.federated.algorithms import ReptileParams
from fedclf.federated.aggregators import Aggregator
from fedclf.federated.aggregators import DpGaussian
from fedclf.federated.attack_config import AttackConfig
from fedclf.federated.client_work import ClientOutput
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.client_work import Scaffold
from fedclf.federated.config import AlgorithmConfig
from fedclf.federated.config import CompressionConfig
from fedclf.federated.config import ServerOptimizerConfig
from fedclf.federated.config import SimulationConfig
from fedclf.federated.simulation import dp_epsilon
from fedclf.federated.simulation import FederatedRunConfig
from fedclf.federated.simulation import run_federated
from fedclf.federated.simulation import Simulation

__all__ = [
    "Aggregator", "Algorithm", "AlgorithmConfig", "AttackConfig",
    "ClientOutput", "CompressionConfig",
    "DpFedAvgParams", "DpGaussian", "FedProxParams", "FederatedRunConfig",
    "LocalSGD", "ReptileParams", "Scaffold", "ServerOptimizerConfig",
    "Simulation", "SimulationConfig", "build_algorithm", "dp_epsilon",
    "run_federated"
]
