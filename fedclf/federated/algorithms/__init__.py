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

Each algorithm is one module of this package; importing the package
registers them all.
"""

from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.algorithms.algorithm import build_algorithm
from fedclf.federated.algorithms.ditto import DittoParams
from fedclf.federated.algorithms.dp_fedavg import DpFedAvgParams
from fedclf.federated.algorithms.fedema import FedEmaParams
from fedclf.federated.algorithms.fedprox import FedProxParams
from fedclf.federated.algorithms.fedrep import FedRepParams
from fedclf.federated.algorithms.per_fedavg import PerFedAvgParams
from fedclf.federated.algorithms.reptile import ReptileParams
# Imported to register them.
from fedclf.federated.algorithms import fedavg
from fedclf.federated.algorithms import fedbn
from fedclf.federated.algorithms import feddyn
from fedclf.federated.algorithms import fednova
from fedclf.federated.algorithms import fedper
from fedclf.federated.algorithms import moon
from fedclf.federated.algorithms import qfedavg
from fedclf.federated.algorithms import scaffold

__all__ = ["Algorithm", "build_algorithm", "DpFedAvgParams", "FedProxParams",
           "ReptileParams", "DittoParams", "FedRepParams", "PerFedAvgParams",
           "fedavg", "fedbn", "feddyn", "fednova", "fedper", "moon", "qfedavg",
           "scaffold", "FedEmaParams"]
