"""Built-in partitioners: iid, dirichlet, shards, quantity_skew, natural.

A partitioner with hyper-parameters registers their dataclass with it
(`DirichletParams`, ...; each field becomes a flag of the binaries) and
reads them from `config.params`, which `partition()` has checked.

Each is registered in `fedclf.registry.PARTITIONERS` and called through
`fedclf.partition.partition`, which has already validated the config, made
`labels` a non-empty int64 array and `client_ids` (if any) the same length,
and which re-checks the coverage invariant on the way out. All randomness
comes from the `rng` argument so that a split is a pure function of
(labels, config).
"""

from __future__ import annotations

import dataclasses
from typing import List, Literal, Optional

import numpy as np

from fedclf.errors import UserError
from fedclf.partition.split import is_int
from fedclf.partition.split import is_positive_finite
from fedclf.partition.split import PartitionConfig
from fedclf.registry import PARTITIONERS

# Bounded so that an infeasible-by-chance Dirichlet setting (tiny alpha, many
# clients) cannot loop forever; the deterministic fix-up covers the rest.
MAX_DIRICHLET_RETRIES = 100
# numpy's Dirichlet sampler slows by ~10x per decade of alpha below 1e-6
# (5 s for 50 draws at 1e-8) and does not return at 1e-9; at 1e-6 a draw is
# already one-hot to float precision, so smaller alphas add nothing.
MIN_DIRICHLET_ALPHA = 1e-6


def _check_concentration(name: str, value: float) -> None:
  if not is_positive_finite(value) or value < MIN_DIRICHLET_ALPHA:
    raise UserError(f"{name} must be >= {MIN_DIRICHLET_ALPHA:g} (smaller "
                    f"values draw the same one-hot proportions), got "
                    f"{value!r}")


def _group(assignment: np.ndarray, num_clients: int) -> List[np.ndarray]:
  """Splits example indices by `assignment[i]` (the client of example i)."""
  order = np.argsort(assignment, kind="stable")
  sizes = np.bincount(assignment, minlength=num_clients)
  return np.split(order, np.cumsum(sizes)[:-1])


def _split_by_sizes(indices: np.ndarray, sizes: np.ndarray) -> List[np.ndarray]:
  return np.split(indices, np.cumsum(sizes)[:-1])


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
  """Integers proportional to `weights` that sum exactly to `total`.

  Hamilton's method: floor every quota, then hand the leftover units to the
  largest fractional parts (ties to the lower index, so it is deterministic).
  """
  quotas = weights / weights.sum() * total
  counts = np.floor(quotas).astype(np.int64)
  leftover = int(total - counts.sum())
  if leftover > 0:
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[:leftover]] += 1
  return counts


@PARTITIONERS.register("iid")
def iid(labels: np.ndarray, config: PartitionConfig, rng: np.random.Generator,
        client_ids: Optional[np.ndarray]) -> List[np.ndarray]:
  """Shuffles and splits as evenly as possible (sizes differ by <= 1)."""
  del client_ids  # Unused.
  return np.array_split(rng.permutation(labels.shape[0]), config.num_clients)


def _dirichlet_proportions(num_clients: int, alpha: float,
                           rng: np.random.Generator) -> np.ndarray:
  """One draw of Dir(alpha, ..., alpha) over the clients.

  Very small alphas can underflow every component to 0 (or NaN on some
  numpy versions); then one random client takes all, the draw's limit.
  """
  p = rng.dirichlet(np.full(num_clients, alpha))
  if not np.all(np.isfinite(p)) or p.sum() <= 0:
    p = np.zeros(num_clients)
    p[rng.integers(num_clients)] = 1.0
  return p


def _dirichlet_counts(class_sizes: np.ndarray, num_clients: int, alpha: float,
                      rng: np.random.Generator) -> np.ndarray:
  """One draw of the [num_classes, num_clients] example-count matrix."""
  counts = np.zeros((class_sizes.shape[0], num_clients), dtype=np.int64)
  for c, n_c in enumerate(class_sizes):
    p = _dirichlet_proportions(num_clients, alpha, rng)
    # Cut points of the cumulative proportions, as in Hsu et al. (2019).
    cuts = np.clip((np.cumsum(p)[:-1] * n_c).astype(np.int64), 0, n_c)
    counts[c] = np.diff(np.concatenate([[0], cuts, [n_c]]))
  return counts


def _fix_up_min_size(counts: np.ndarray, min_size: int) -> np.ndarray:
  """Moves examples from the largest clients until all have >= min_size.

  Deterministic: the receiver is the smallest client (lowest index on ties),
  the donor the largest, and the class moved is the donor's most frequent
  one, which disturbs the donor's label mix least. Always terminates because
  partition() checked num_clients * min_size <= num_examples, so the largest
  client has more than min_size examples whenever some client has fewer.
  """
  counts = counts.copy()
  sizes = counts.sum(axis=0)
  while sizes.min() < min_size:
    receiver = int(np.argmin(sizes))
    donor = int(np.argmax(sizes))
    c = int(np.argmax(counts[:, donor]))
    counts[c, donor] -= 1
    counts[c, receiver] += 1
    sizes[donor] -= 1
    sizes[receiver] += 1
  return counts


@dataclasses.dataclass(frozen=True)
class DirichletParams:
  """Small alphas give strongly label-skewed clients, large ones near-IID."""
  dirichlet_alpha: float = dataclasses.field(
      default=0.5, metadata={"help": "concentration."})

  def validate(self) -> None:
    _check_concentration("dirichlet_alpha", self.dirichlet_alpha)


@PARTITIONERS.register("dirichlet", params=DirichletParams)
def dirichlet(labels: np.ndarray, config: PartitionConfig,
              rng: np.random.Generator,
              client_ids: Optional[np.ndarray]) -> List[np.ndarray]:
  """Label skew: per class, client shares ~ Dir(alpha * 1).

  Hsu et al. 2019 ("Measuring the effects of non-identical data
  distribution"), Yurochkin et al. 2019. For each class independently, a
  proportion vector over clients is drawn from a symmetric Dirichlet and the
  class's (shuffled) examples are cut accordingly. The whole draw is
  repeated (up to MAX_DIRICHLET_RETRIES times) until every client has at
  least `min_examples_per_client` examples; if that never happens, examples
  are moved from the largest clients deterministically (_fix_up_min_size).
  """
  del client_ids  # Unused.
  params: DirichletParams = config.params
  m = config.num_clients
  classes = np.unique(labels)
  # Shuffle each class once; retries only redraw the proportions.
  class_members = [rng.permutation(np.flatnonzero(labels == c))
                   for c in classes]
  class_sizes = np.array([len(x) for x in class_members], dtype=np.int64)
  counts = None
  for _ in range(MAX_DIRICHLET_RETRIES):
    counts = _dirichlet_counts(class_sizes, m, params.dirichlet_alpha, rng)
    if counts.sum(axis=0).min() >= config.min_examples_per_client:
      break
  counts = _fix_up_min_size(counts, config.min_examples_per_client)
  assignment = np.empty(labels.shape[0], dtype=np.int64)
  for members, row in zip(class_members, counts):
    assignment[members] = np.repeat(np.arange(m), row)
  return _group(assignment, m)


@dataclasses.dataclass(frozen=True)
class ShardsParams:
  shards_per_client: int = dataclasses.field(
      default=2, metadata={"help": "shards per client."})

  def validate(self) -> None:
    if not is_int(self.shards_per_client) or self.shards_per_client < 1:
      raise UserError(f"shards_per_client must be an integer >= 1, got "
                      f"{self.shards_per_client!r}")


@PARTITIONERS.register("shards", params=ShardsParams)
def shards(labels: np.ndarray, config: PartitionConfig,
           rng: np.random.Generator,
           client_ids: Optional[np.ndarray]) -> List[np.ndarray]:
  """Pathological non-IID split of McMahan et al. 2017 (FedAvg).

  Examples are sorted by label (stable, over a random permutation, so ties
  are in random order), cut into num_clients * shards_per_client contiguous
  shards whose sizes differ by at most one (so the remainder examples are
  covered), and each client receives shards_per_client random shards.
  """
  del client_ids  # Unused.
  per_client = config.params.shards_per_client
  n = labels.shape[0]
  num_shards = config.num_clients * per_client
  if num_shards > n:
    raise UserError(
        f"cannot cut {n} examples into {config.num_clients} clients x "
        f"{per_client} shards = {num_shards} non-empty shards")
  shuffled = rng.permutation(n)
  by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
  shard_list = np.array_split(by_label, num_shards)
  shard_order = rng.permutation(num_shards).reshape(
      config.num_clients, per_client)
  return [np.concatenate([shard_list[s] for s in row]) for row in shard_order]


@dataclasses.dataclass(frozen=True)
class LabelsPerClientParams:
  labels_per_client: int = dataclasses.field(
      default=2, metadata={"help": "distinct labels per client "
                                   "(NIID-Bench's #C=k)."})

  def validate(self) -> None:
    if not is_int(self.labels_per_client) or self.labels_per_client < 1:
      raise UserError(f"labels_per_client must be an integer >= 1, got "
                      f"{self.labels_per_client!r}")


@PARTITIONERS.register("labels_per_client", params=LabelsPerClientParams)
def labels_per_client(labels: np.ndarray, config: PartitionConfig,
                      rng: np.random.Generator,
                      client_ids: Optional[np.ndarray]) -> List[np.ndarray]:
  """Label-quantity skew of NIID-Bench (Li et al. 2022, "#C=k").

  Client i owns label i mod K plus `labels_per_client - 1` further
  distinct labels drawn at random; each label's examples are then shuffled
  and split evenly among its owners. With num_clients >= K every label has
  an owner and every client exactly k labels.
  """
  del client_ids  # Unused.
  classes = np.unique(labels)
  num_classes, m = len(classes), config.num_clients
  k = config.params.labels_per_client
  if k > num_classes:
    raise UserError(f"labels_per_client={k} exceeds the {num_classes} "
                    f"classes of the dataset")
  owners: List[List[int]] = [[] for _ in classes]
  for client in range(m):
    own = [client % num_classes]
    others = [c for c in rng.permutation(num_classes) if c != own[0]]
    own.extend(others[:k - 1])
    for c in own:
      owners[c].append(client)
  # With fewer clients than classes some labels have no owner yet; they go
  # round-robin to the clients (which then hold more than k labels) so
  # that every example is still covered.
  for c in range(num_classes):
    if not owners[c]:
      owners[c].append(c % m)
  assignment = np.empty(labels.shape[0], dtype=np.int64)
  for c, clients in enumerate(owners):
    members = rng.permutation(np.flatnonzero(labels == classes[c]))
    if len(members) < len(clients):
      raise UserError(f"label {classes[c]} has {len(members)} examples for "
                      f"{len(clients)} owning clients")
    for client, part in zip(clients, np.array_split(members, len(clients))):
      assignment[part] = client
  return _group(assignment, m)


@dataclasses.dataclass(frozen=True)
class QuantitySkewParams:
  power_law_exponent: float = dataclasses.field(
      default=1.5, metadata={"help": "Pareto shape (--client_sizes="
                                     "power_law)."})
  client_sizes: Literal["power_law", "dirichlet"] = dataclasses.field(
      default="power_law",
      metadata={"help": "how client sizes are drawn: power_law (Pareto "
                        "weights) or dirichlet (NIID-Bench's quantity "
                        "skew, proportions ~ Dir(size_dirichlet_alpha))."})
  size_dirichlet_alpha: float = dataclasses.field(
      default=0.5, metadata={"help": "concentration of the client-size "
                                     "proportions (--client_sizes="
                                     "dirichlet)."})

  def validate(self) -> None:
    if not is_positive_finite(self.power_law_exponent):
      raise UserError(f"power_law_exponent must be > 0, got "
                      f"{self.power_law_exponent!r}")
    _check_concentration("size_dirichlet_alpha", self.size_dirichlet_alpha)


def _size_weights(params: QuantitySkewParams, num_clients: int,
                  rng: np.random.Generator) -> np.ndarray:
  """Positive, finite client-size weights (any scale)."""
  if params.client_sizes == "dirichlet":
    return _dirichlet_proportions(num_clients, params.size_dirichlet_alpha,
                                  rng)
  weights = 1.0 + rng.pareto(params.power_law_exponent, size=num_clients)
  # Overflow to inf is possible for tiny exponents; keep the ordering sane.
  return np.nan_to_num(weights,
                       posinf=np.finfo(np.float64).max / (num_clients + 1))


@PARTITIONERS.register("quantity_skew", params=QuantitySkewParams)
def quantity_skew(labels: np.ndarray, config: PartitionConfig,
                  rng: np.random.Generator,
                  client_ids: Optional[np.ndarray]) -> List[np.ndarray]:
  """IID labels, skewed client sizes (power-law or Dirichlet).

  Each client i draws a weight w_i. With client_sizes=power_law (the
  default), w_i ~ Pareto(a, scale 1), i.e. P(w_i > w) = w**-a for w >= 1
  with a = power_law_exponent (numpy's `1 + rng.pareto(a)`); smaller `a`
  means heavier tails and more skew, and for a <= 1 the weights have
  infinite mean. With client_sizes=dirichlet, (w_1..w_m) ~
  Dir(size_dirichlet_alpha), NIID-Bench's quantity skew (Li et al. 2022,
  which resamples until every client has 10 examples; here the minimum is
  given first instead). Every client first gets min_examples_per_client
  examples, and the remaining N - num_clients * min_examples_per_client are
  shared in proportion to the weights (largest-remainder rounding, so sizes
  sum exactly to N). Examples are then dealt out from one random
  permutation, so each client's labels are an IID sample.
  """
  del client_ids  # Unused.
  n = labels.shape[0]
  m = config.num_clients
  weights = _size_weights(config.params, m, rng)
  base = config.min_examples_per_client
  sizes = base + _largest_remainder(weights, n - m * base)
  return _split_by_sizes(rng.permutation(n), sizes)


@PARTITIONERS.register("natural")
def natural(labels: np.ndarray, config: PartitionConfig,
            rng: np.random.Generator,
            client_ids: Optional[np.ndarray]) -> List[np.ndarray]:
  """Clients from the dataset's own grouping (e.g. EMNIST writers).

  A writer is never split. Writers are put in a seeded random order and
  dealt round-robin to the clients, so with num_clients == number of writers
  each client is one writer, and with fewer clients each client merges
  about writers / num_clients writers. More clients than writers is an
  error, since every example must be used exactly once.
  """
  del labels  # Unused: the grouping comes from client_ids alone.
  if client_ids is None:
    raise UserError("the natural partition needs a dataset with natural "
                    "clients (e.g. emnist); this one has no client ids")
  writers, writer_of_example = np.unique(client_ids, return_inverse=True)
  num_writers = writers.shape[0]
  m = config.num_clients
  if m > num_writers:
    raise UserError(f"the natural partition cannot make {m} clients from "
                    f"{num_writers} writers; use num_clients <= {num_writers}")
  client_of_writer = np.empty(num_writers, dtype=np.int64)
  client_of_writer[rng.permutation(num_writers)] = np.arange(num_writers) % m
  return _group(client_of_writer[writer_of_example.reshape(-1)], m)
