"""Splitting a dataset across simulated federated clients.

    from fedclf.partition import PartitionConfig, partition
    parts = partition("dirichlet", labels, PartitionConfig(
        num_clients=100, params=DirichletParams(dirichlet_alpha=0.1)))

Built-in partitioners (registered in `fedclf.registry.PARTITIONERS`): iid,
dirichlet, shards, labels_per_client, quantity_skew, natural. A plugin
registers its own with `@PARTITIONERS.register(name)` (and
`params=ItsParams`, a dataclass of its hyper-parameters that it then reads
from `config.params`; see `fedclf.plugin_config`) and the signature
`fn(labels, config, rng, client_ids) -> list[np.ndarray]`.
"""

from fedclf.partition.split import PartitionConfig
from fedclf.partition.split import PartitionInvariantError
from fedclf.partition.split import partition
from fedclf.partition.split import validate_config
# Imported for its registration side effects.
from fedclf.partition import partitioners  # noqa: F401
from fedclf.partition.partitioners import MIN_DIRICHLET_ALPHA
from fedclf.partition.partitioners import DirichletParams
from fedclf.partition.partitioners import LabelsPerClientParams
from fedclf.partition.partitioners import QuantitySkewParams
from fedclf.partition.partitioners import ShardsParams
from fedclf.partition.stats import format_histogram
from fedclf.partition.stats import label_histogram
from fedclf.partition.stats import partition_summary
from fedclf.partition.stats import plot_histogram

__all__ = [
    "DirichletParams",
    "LabelsPerClientParams",
    "PartitionConfig",
    "PartitionInvariantError",
    "QuantitySkewParams",
    "ShardsParams",
    "format_histogram",
    "label_histogram",
    "partition",
    "partition_summary",
    "plot_histogram",
    "validate_config",
]
