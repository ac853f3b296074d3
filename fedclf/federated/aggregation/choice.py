"""Choosing an aggregator for a run: the algorithm's own, or a registered
one put in its place (`--aggregator`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fedclf.errors import UserError
from fedclf.plugin_config import resolve_params
from fedclf.registry import AGGREGATORS


def build_aggregator(name: str, params: Any = None):
  """The registered aggregator `name` for its params dataclass `params`
  (None: its defaults)."""
  factory = AGGREGATORS.get(name)
  return factory(resolve_params(AGGREGATORS, name, params))


def with_aggregator(algorithm, name: str, params: Any = None):
  """`algorithm` (an `Algorithm`) aggregating with the registered `name`;
  unchanged when `name` is empty (the algorithm's own aggregator).

  Raises:
    UserError: the algorithm's privacy guarantee rests on its own
      aggregator (DP-FedAvg's clipped, noised sum), which a non-DP one
      would silently void.
  """
  if not name:
    return algorithm
  aggregator = build_aggregator(name, params)
  if (algorithm.aggregator.differentially_private and
      not aggregator.differentially_private):
    raise UserError(
        f"--aggregator={name} would replace {algorithm.name}'s "
        f"differentially private aggregation ({algorithm.aggregator.name}) "
        f"and void its privacy guarantee; leave --aggregator empty")
  return dataclasses.replace(algorithm, aggregator=aggregator)
