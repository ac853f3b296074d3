"""`mean`: the example-weighted mean (FedAvg's), as a choosable aggregator."""

from __future__ import annotations

from fedclf.federated.aggregators import Aggregator
from fedclf.plugin_config import NoParams
from fedclf.registry import AGGREGATORS


@AGGREGATORS.register("mean")
def mean(params: NoParams) -> Aggregator:
  """Example-weighted mean of the updates (FedAvg; TFF: MeanFactory)."""
  del params  # Unused.
  return Aggregator()
