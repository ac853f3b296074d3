"""The partition entry point: config, validation and the coverage invariant.

`partition()` is the only way the rest of fedclf splits a dataset across
simulated clients. It validates the request once (so every partitioner,
built-in or plugin, can assume sane inputs), draws all randomness from one
`np.random.default_rng(config.seed)` (so a run is reproducible from its
config alone), and checks the result (so a buggy plugin fails loudly here
instead of silently training on duplicated or dropped examples).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, List, Optional

import numpy as np

from fedclf.errors import UserError
from fedclf.plugin_config import resolve_params
from fedclf.registry import PARTITIONERS

# Signature every registered partitioner implements. It may return the
# indices of each client in any order and any integer dtype; `partition()`
# sorts and casts them.
PartitionFn = Callable[
    [np.ndarray, "PartitionConfig", np.random.Generator, Optional[np.ndarray]],
    List[np.ndarray]]


class PartitionInvariantError(RuntimeError):
  """A partitioner returned an invalid split; this is a bug in its code."""


@dataclasses.dataclass(frozen=True)
class PartitionConfig:
  """How to split a dataset across clients.

  Attributes:
    num_clients: Number of clients to produce; every one gets >= 1 example.
    seed: Seed of the generator all partitioners draw from.
    min_examples_per_client: Lower bound on client size enforced by
      `dirichlet` and `quantity_skew` (and met by `iid` whenever the request
      is feasible at all).
    params: The partitioner's own hyper-parameters: the dataclass it
      registered (e.g. `DirichletParams(dirichlet_alpha=0.1)`), or None for
      its defaults. `partition()` checks it against the partitioner named
      and hands the partitioner a config whose `params` is never None.
  """
  num_clients: int
  seed: int = 0
  min_examples_per_client: int = 1
  params: Any = None


def is_int(value) -> bool:
  # bool is an int subclass, but `num_clients=True` is always a mistake.
  return isinstance(value, (int, np.integer)) and not isinstance(
      value, (bool, np.bool_))


def is_positive_finite(value) -> bool:
  return (isinstance(value, (int, float, np.integer, np.floating)) and
          not isinstance(value, (bool, np.bool_)) and math.isfinite(value) and
          value > 0)


def _as_labels(labels) -> np.ndarray:
  """Returns `labels` as a 1-D int64 array of non-negative class ids."""
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise UserError(
        f"labels must be a 1-D array of class ids, got shape {labels.shape}")
  if labels.size == 0:
    raise UserError("cannot partition an empty dataset (no labels)")
  if not np.issubdtype(labels.dtype, np.integer):
    # Some loaders hand labels over as floats; accept them only when they are
    # exact integers, since rounding a real label would be a silent bug.
    if (not np.issubdtype(labels.dtype, np.number) or
        not np.all(np.isfinite(labels)) or
        not np.all(labels == np.round(labels))):
      raise UserError(
          f"labels must be integer class ids, got dtype {labels.dtype}")
  labels = labels.astype(np.int64)
  if labels.min() < 0:
    raise UserError(f"labels must be >= 0, found {labels.min()}")
  return labels


def validate_config(config: PartitionConfig, num_examples: int) -> None:
  """Raises `UserError` unless `config` can split `num_examples` examples.

  Only constraints shared by all partitioners are checked here (a
  partitioner's params validate themselves, see `partition`); a
  partitioner checks its own data-dependent ones (e.g. `shards` needs
  num_clients * shards_per_client <= num_examples).
  """
  if not isinstance(config, PartitionConfig):
    raise TypeError(
        f"config must be a PartitionConfig, got {type(config).__name__}")
  m = config.num_clients
  if not is_int(m) or m < 1:
    raise UserError(f"num_clients must be an integer >= 1, got {m!r}")
  if m > num_examples:
    raise UserError(
        f"cannot split {num_examples} examples across {m} clients")
  if not is_int(config.seed):
    raise UserError(f"seed must be an integer, got {config.seed!r}")
  k = config.min_examples_per_client
  if not is_int(k) or k < 1:
    raise UserError(
        f"min_examples_per_client must be an integer >= 1, got {k!r}")
  if m * k > num_examples:
    raise UserError(
        f"cannot give each of {m} clients at least {k} examples: the dataset "
        f"has only {num_examples}")


def _check_invariant(name: str, parts, num_examples: int,
                     num_clients: int) -> List[np.ndarray]:
  """Sorts and casts `parts`, raising unless they are a valid split."""
  if not isinstance(parts, (list, tuple)) or len(parts) != num_clients:
    got = len(parts) if isinstance(parts, (list, tuple)) else type(parts)
    raise PartitionInvariantError(
        f"partitioner {name!r} returned {got} clients, expected {num_clients}")
  out = []
  for i, part in enumerate(parts):
    part = np.asarray(part)
    if part.ndim != 1 or (part.size and
                          not np.issubdtype(part.dtype, np.integer)):
      raise PartitionInvariantError(
          f"partitioner {name!r}: client {i} is not a 1-D integer index "
          f"array (shape {part.shape}, dtype {part.dtype})")
    if part.size == 0:
      raise PartitionInvariantError(
          f"partitioner {name!r}: client {i} is empty")
    out.append(np.sort(part.astype(np.int64)))
  flat = np.concatenate(out)
  if flat.min() < 0 or flat.max() >= num_examples:
    raise PartitionInvariantError(
        f"partitioner {name!r} returned indices outside [0, {num_examples})")
  counts = np.bincount(flat, minlength=num_examples)
  if np.any(counts != 1):
    missing = int(np.sum(counts == 0))
    repeated = int(np.sum(counts > 1))
    raise PartitionInvariantError(
        f"partitioner {name!r} must use every example exactly once: "
        f"{missing} unused, {repeated} used more than once")
  return out


def partition(name: str,
              labels: np.ndarray,
              config: PartitionConfig,
              client_ids: Optional[np.ndarray] = None) -> List[np.ndarray]:
  """Splits example indices across `config.num_clients` clients.

  Args:
    name: A registered partitioner (see `fedclf.registry.PARTITIONERS`).
    labels: Class id per example, shape [num_examples].
    config: The split to make.
    client_ids: Optional natural client (e.g. writer) id per example, same
      length as `labels`; only the `natural` partitioner needs it.

  Returns:
    One sorted int64 index array per client; together they hold every index
    in [0, num_examples) exactly once and none is empty.

  Raises:
    UnknownNameError: `name` is not registered.
    UserError: The request is invalid or infeasible.
    PartitionInvariantError: The partitioner broke the invariant (a bug).
  """
  fn = PARTITIONERS.get(name)
  labels = _as_labels(labels)
  n = labels.shape[0]
  validate_config(config, n)
  config = dataclasses.replace(
      config, params=resolve_params(PARTITIONERS, name, config.params))
  if client_ids is not None:
    client_ids = np.asarray(client_ids)
    if client_ids.ndim != 1 or client_ids.shape[0] != n:
      raise UserError(
          f"client_ids must be a 1-D array with one id per example "
          f"({n}), got shape {client_ids.shape}")
  rng = np.random.default_rng(config.seed)
  parts = fn(labels, config, rng, client_ids)
  return _check_invariant(name, parts, n, config.num_clients)
