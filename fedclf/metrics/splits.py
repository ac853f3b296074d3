"""Seeded k-fold and hold-out index splits, optionally stratified by label."""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from fedclf.errors import UserError


def _check_n(n) -> int:
  if (not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1):
    raise UserError(f"number of examples must be an integer >= 1, got {n!r}")
  return int(n)


def _check_labels(labels, n: int) -> Optional[np.ndarray]:
  if labels is None:
    return None
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.shape[0] != n:
    raise UserError(f"labels must be 1-D with {n} entries, got shape "
                    f"{labels.shape}")
  return labels


def _stratified_order(labels: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
  """Indices grouped by class (classes in sorted order), shuffled within."""
  shuffled = rng.permutation(labels.shape[0])
  return shuffled[np.argsort(labels[shuffled], kind="stable")]


def kfold_indices(
    n: int, folds: int, seed: int,
    labels: Optional[np.ndarray] = None
) -> List[Tuple[np.ndarray, np.ndarray]]:
  """Seeded k-fold cross-validation splits.

  Args:
    n: Number of examples.
    folds: Number of folds, 2 <= folds <= n.
    seed: Seed of the shuffle.
    labels: Optional class per example; if given, folds are stratified.

  Returns:
    `folds` pairs (train_idx, val_idx) of sorted int64 arrays. Every index
    is in exactly one val fold, and train_idx is its complement. Fold sizes
    differ by at most one; with labels, each class's count also differs by
    at most one between folds (its examples are dealt round-robin after
    grouping by class), so class ratios match the whole set.
  """
  n = _check_n(n)
  if (not isinstance(folds, (int, np.integer)) or isinstance(folds, bool) or
      folds < 2 or folds > n):
    raise UserError(f"folds must be an integer in [2, {n}] for {n} examples, "
                    f"got {folds!r}")
  labels = _check_labels(labels, n)
  rng = np.random.default_rng(seed)
  fold_of = np.empty(n, dtype=np.int64)
  if labels is None:
    fold_of[rng.permutation(n)] = np.arange(n) % folds
  else:
    # Dealing the class-grouped order round-robin keeps both each class's
    # per-fold count and the overall fold size within one of each other.
    fold_of[_stratified_order(labels, rng)] = np.arange(n) % folds
  everything = np.arange(n, dtype=np.int64)
  return [(everything[fold_of != k], everything[fold_of == k])
          for k in range(folds)]


def holdout_split(n: int, val_fraction: float, seed: int,
                  labels: Optional[np.ndarray] = None
                  ) -> Tuple[np.ndarray, np.ndarray]:
  """Seeded train/validation split.

  Args:
    n: Number of examples.
    val_fraction: Share of examples for validation, 0 < val_fraction < 1;
      the validation size is round(n * val_fraction).
    seed: Seed of the shuffle.
    labels: Optional class per example; if given the split is stratified:
      each class contributes n_c * val_fraction examples, rounded by largest
      remainder (ties broken at random) so the total is exact.

  Returns:
    (train_idx, val_idx), sorted int64 arrays that partition range(n).

  Raises:
    UserError: val_fraction is out of range or either part would be empty.
  """
  n = _check_n(n)
  if (isinstance(val_fraction, bool) or
      not isinstance(val_fraction, (int, float, np.integer, np.floating)) or
      not 0.0 < val_fraction < 1.0):
    raise UserError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
  num_val = int(round(n * val_fraction))
  if num_val < 1 or num_val > n - 1:
    raise UserError(f"val_fraction {val_fraction} of {n} examples leaves an "
                    f"empty {'validation' if num_val < 1 else 'training'} set")
  labels = _check_labels(labels, n)
  rng = np.random.default_rng(seed)
  is_val = np.zeros(n, dtype=bool)
  if labels is None:
    is_val[rng.permutation(n)[:num_val]] = True
  else:
    classes, class_of = np.unique(labels, return_inverse=True)
    class_of = class_of.reshape(-1)
    class_sizes = np.bincount(class_of, minlength=classes.shape[0])
    quotas = class_sizes * (num_val / n)
    counts = np.floor(quotas).astype(np.int64)
    leftover = num_val - int(counts.sum())
    # Random tie-breaking, so low class ids are not systematically favoured.
    tie_order = rng.permutation(classes.shape[0])
    by_remainder = tie_order[np.argsort(-(quotas - counts)[tie_order],
                                        kind="stable")]
    counts[by_remainder[:leftover]] += 1
    order = _stratified_order(class_of, rng)
    starts = np.concatenate([[0], np.cumsum(class_sizes)[:-1]])
    for start, count in zip(starts, counts):
      is_val[order[start:start + count]] = True
  everything = np.arange(n, dtype=np.int64)
  return everything[~is_val], everything[is_val]
