"""Robust aggregators (`--aggregator`) and attacks against hand-computed
examples, and short runs of them on both backends."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated import AlgorithmConfig
from fedclf.federated import build_algorithm
from fedclf.federated import DpFedAvgParams
from fedclf.federated.aggregation import with_aggregator
from fedclf.federated.aggregation.choice import build_aggregator
from fedclf.federated.aggregation.krum import KrumParams
from fedclf.federated.aggregation.krum import krum_selection
from fedclf.federated.aggregation.krum import MultiKrumParams
from fedclf.federated.aggregation.norm_bound import NormBoundParams
from fedclf.federated.aggregation.trimmed_mean import TrimmedMeanParams
from fedclf.federated.aggregation.votes import active_stacks
from fedclf.plugin_config import build_params
from fedclf.registry import AGGREGATORS

# Five clients, two weight tensors each; client 3 is an outlier, client 4
# dropped (weight 0, its zero update must not vote).
UPDATES = [
    ([1.0, 2.0], [[0.0]]),
    ([2.0, 1.0], [[1.0]]),
    ([3.0, 3.0], [[2.0]]),
    ([100.0, -100.0], [[50.0]]),
    ([0.0, 0.0], [[0.0]]),
]
WEIGHTS = [1.0, 2.0, 1.0, 1.0, 0.0]


def deltas():
  return [[tf.constant(a), tf.constant(b)] for a, b in UPDATES]


def combine(name, params=None, weights=WEIGHTS):
  out = build_aggregator(name, params).combine(deltas(), weights, 5, (0, 1))
  return [t.numpy() for t in out]


def active_numpy():
  """The four reporting clients' two tensors as numpy stacks."""
  return (np.array([a for a, _ in UPDATES[:4]]),
          np.array([b for _, b in UPDATES[:4]]))


def test_builtin_aggregators_are_registered():
  assert {"mean", "median", "trimmed_mean", "krum", "multi_krum",
          "norm_bound"} <= set(AGGREGATORS.names())


def test_active_stacks_leave_out_dropped_clients():
  first, second = active_stacks(deltas(), WEIGHTS)
  assert first.shape == (4, 2) and second.shape == (4, 1, 1)


def test_mean_is_example_weighted():
  first, second = combine("mean")
  a, b = active_numpy()
  w = np.array(WEIGHTS[:4])
  np.testing.assert_allclose(first, (w[:, None] * a).sum(0) / w.sum(),
                             rtol=1e-6)
  np.testing.assert_allclose(second, (w[:, None, None] * b).sum(0) / w.sum(),
                             rtol=1e-6)


def test_median_ignores_the_outlier_and_the_dropped_client():
  first, second = combine("median")
  # Columns of the four reporting clients: (1, 2, 3, 100) -> 2.5,
  # (2, 1, 3, -100) -> 1.5, (0, 1, 2, 50) -> 1.5.
  np.testing.assert_allclose(first, [2.5, 1.5])
  np.testing.assert_allclose(second, [[1.5]])
  a, _ = active_numpy()
  np.testing.assert_allclose(first, np.median(a, axis=0))


def test_trimmed_mean_drops_each_end():
  # 4 reporting clients, trim 0.25: one value off each end per coordinate.
  first, second = combine("trimmed_mean", TrimmedMeanParams(0.25))
  np.testing.assert_allclose(first, [2.5, 1.5])  # mean(2, 3), mean(1, 2)
  np.testing.assert_allclose(second, [[1.5]])  # mean(1, 2)
  # trim 0.2 of 4 clients rounds down to none: the unweighted mean.
  first, _ = combine("trimmed_mean", TrimmedMeanParams(0.2))
  np.testing.assert_allclose(first, active_numpy()[0].mean(0))


def krum_scores_by_hand(byzantine):
  a, b = active_numpy()
  flat = np.concatenate([a, b.reshape(4, -1)], axis=1)
  n = len(flat)
  dist = ((flat[:, None] - flat[None]) ** 2).sum(-1)
  k = max(1, min(n - byzantine - 2, n - 1))
  return [np.sort(np.delete(dist[i], i))[:k].sum() for i in range(n)]


def test_krum_picks_the_update_closest_to_its_neighbours():
  # byzantine_fraction 0.25 of 4 -> f = 1, each scored on 4-1-2 = 1
  # nearest neighbour.
  stacks = active_stacks(deltas(), WEIGHTS)
  scores = krum_scores_by_hand(1)
  assert krum_selection(stacks, 0.25, 1) == [int(np.argmin(scores))]
  first, second = combine("krum", KrumParams(byzantine_fraction=0.25))
  # Clients 0 and 1 are nearest each other (distance 1+1+1 = 3); the tie
  # goes to the lower index.
  np.testing.assert_allclose(first, [1.0, 2.0])
  np.testing.assert_allclose(second, [[0.0]])


def test_multi_krum_averages_the_best_scores():
  first, _ = combine("multi_krum", MultiKrumParams(byzantine_fraction=0.25,
                                                   multi_krum_selected=0))
  # m = n - f = 3: every client but the outlier, unweighted.
  np.testing.assert_allclose(first, [2.0, 2.0])
  first, _ = combine("multi_krum", MultiKrumParams(byzantine_fraction=0.25,
                                                   multi_krum_selected=2))
  np.testing.assert_allclose(first, [1.5, 1.5])


def test_norm_bound_clips_then_weights():
  first, second = combine("norm_bound", NormBoundParams(clip_norm=2.0))
  a, b = active_numpy()
  flat = np.concatenate([a, b.reshape(4, -1)], axis=1)
  scale = np.minimum(1.0, 2.0 / np.linalg.norm(flat, axis=1))
  w = np.array(WEIGHTS[:4])
  expected = (w[:, None] * scale[:, None] * flat).sum(0) / w.sum()
  np.testing.assert_allclose(np.concatenate([first, second.ravel()]),
                             expected, rtol=1e-5)


@pytest.mark.parametrize("name,values,message", [
    ("trimmed_mean", {"trim_fraction": 0.5}, "trim_fraction"),
    ("krum", {"byzantine_fraction": -0.1}, "byzantine_fraction"),
    ("multi_krum", {"multi_krum_selected": -1}, "multi_krum_selected"),
    ("norm_bound", {"clip_norm": 0.0}, "clip_norm"),
])
def test_bad_params_are_refused_in_one_line(name, values, message):
  with pytest.raises(UserError) as e:
    build_params(AGGREGATORS.params_class(name), values, f"aggregator {name}")
  assert message in str(e.value) and "\n" not in str(e.value)


def test_with_aggregator_replaces_or_refuses():
  fedavg = build_algorithm("fedavg", AlgorithmConfig())
  assert with_aggregator(fedavg, "") is fedavg
  assert with_aggregator(fedavg, "median").aggregator.name == "median"
  dp = build_algorithm("dp_fedavg", AlgorithmConfig(), DpFedAvgParams())
  with pytest.raises(UserError, match="privacy"):
    with_aggregator(dp, "median")
  assert dataclasses.replace(fedavg).aggregator.name == "weighted_mean"
