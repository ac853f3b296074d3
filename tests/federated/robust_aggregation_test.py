"""Robust aggregators (`--aggregator`) and attacks against hand-computed
examples, and short runs of them on both backends."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from fedclf.data import DataConfig
from fedclf.errors import UserError
from fedclf.federated import AlgorithmConfig
from fedclf.federated import build_algorithm
from fedclf.federated import DpFedAvgParams
from fedclf.federated import FederatedRunConfig
from fedclf.federated import SimulationConfig
from fedclf.federated.aggregation import with_aggregator
from fedclf.federated.aggregation.choice import build_aggregator
from fedclf.federated.aggregation.krum import KrumParams
from fedclf.federated.aggregation.krum import krum_selection
from fedclf.federated.aggregation.krum import MultiKrumParams
from fedclf.federated.aggregation.norm_bound import NormBoundParams
from fedclf.federated.aggregation.trimmed_mean import TrimmedMeanParams
from fedclf.federated.aggregation.votes import active_stacks
from fedclf.federated.attack_config import AttackConfig
from fedclf.federated.attack_config import malicious_clients
from fedclf.federated.attacks import attacked_delta
from fedclf.federated.attacks import flip_labels
from fedclf.partition import PartitionConfig
from fedclf.plugin_config import build_params
from fedclf.registry import AGGREGATORS
from tests.federated.simulation_runs import final_weights

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


# -- short runs on both backends ---------------------------------------------

AGGREGATOR_PARAMS = {
    "median": None,
    "trimmed_mean": TrimmedMeanParams(trim_fraction=0.25),
    "krum": KrumParams(byzantine_fraction=0.25),
    "multi_krum": MultiKrumParams(byzantine_fraction=0.25,
                                  multi_krum_selected=2),
    # Small enough that the digits MLP's updates are clipped.
    "norm_bound": NormBoundParams(clip_norm=0.5),
}


def run_config(backend, aggregator="", rounds=2, attack=None,
               num_clients=6, clients_per_round=4):
  """A tiny digits run of FedAvg with `aggregator` (and `attack`)."""
  return FederatedRunConfig(
      data=DataConfig(name="digits", train_limit=300, test_limit=100),
      partitioner="iid",
      partition=PartitionConfig(num_clients=num_clients, seed=1),
      model_name="mlp",
      simulation=SimulationConfig(
          algorithm="fedavg",
          algorithm_config=AlgorithmConfig(client_lr=0.05, local_epochs=1,
                                           local_batch_size=16),
          num_clients=num_clients, clients_per_round=clients_per_round,
          rounds=rounds, eval_every=rounds, checkpoint_every=0,
          per_client_eval=0, backend=backend, seed=1,
          aggregator=aggregator,
          aggregator_params=AGGREGATOR_PARAMS.get(aggregator),
          **({"attack": attack} if attack else {})))


def test_every_aggregator_runs_two_rounds_on_both_backends(tmp_path):
  for name in AGGREGATOR_PARAMS:
    local, summary = final_weights(run_config("local", name),
                               tmp_path / name / "local")
    assert summary["aggregator"] == name and summary["rounds_run"] == 2
    on_tff, summary = final_weights(run_config("tff", name),
                                tmp_path / name / "tff")
    assert summary["backend"] == "tff" and summary["rounds_run"] == 2
    for a, b in zip(local.trainable, on_tff.trainable):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=name)


# An update attack through TFF's own mean, a data attack through the
# driver's median: the attacked runs agree across backends too.
@pytest.mark.parametrize("aggregator,attack", [
    ("mean", AttackConfig(malicious_fraction=0.34, attack="sign_flip",
                          attack_scale=3.0)),
    ("median", AttackConfig(malicious_fraction=0.34, attack="label_flip")),
    ("norm_bound", AttackConfig(malicious_fraction=0.34,
                                attack="gaussian_noise",
                                attack_noise_std=0.1)),
])
def test_attacked_runs_agree_across_backends(tmp_path, aggregator, attack):
  local, _ = final_weights(run_config("local", aggregator, attack=attack),
                       tmp_path / "local")
  on_tff, _ = final_weights(run_config("tff", aggregator, attack=attack),
                        tmp_path / "tff")
  for a, b in zip(local.trainable, on_tff.trainable):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


# -- attacks -----------------------------------------------------------------

def test_sign_flip_and_scaled_change_only_malicious_updates():
  delta = [tf.constant([1.0, -2.0]), tf.constant([[3.0]])]
  seed = tf.constant([1, 2], tf.int64)
  flip = AttackConfig(malicious_fraction=0.1, attack="sign_flip",
                      attack_scale=4.0)
  out = attacked_delta(delta, 1.0, seed, flip)
  np.testing.assert_allclose(out[0].numpy(), [-4.0, 8.0])
  np.testing.assert_allclose(out[1].numpy(), [[-12.0]])
  honest = attacked_delta(delta, 0.0, seed, flip)
  np.testing.assert_allclose(honest[0].numpy(), [1.0, -2.0])
  scaled = dataclasses.replace(flip, attack="scaled")
  np.testing.assert_allclose(
      attacked_delta(delta, 1.0, seed, scaled)[0].numpy(), [4.0, -8.0])
  off = dataclasses.replace(flip, malicious_fraction=0.0)
  np.testing.assert_allclose(
      attacked_delta(delta, 1.0, seed, off)[0].numpy(), [1.0, -2.0])


def test_gaussian_noise_is_seeded_per_round_and_client():
  delta = [tf.zeros([2000])]
  noise = AttackConfig(malicious_fraction=0.1, attack="gaussian_noise",
                       attack_noise_std=0.5)
  a = attacked_delta(delta, 1.0, tf.constant([3, 7], tf.int64), noise)[0]
  again = attacked_delta(delta, 1.0, tf.constant([3, 7], tf.int64), noise)[0]
  other = attacked_delta(delta, 1.0, tf.constant([3, 8], tf.int64), noise)[0]
  np.testing.assert_array_equal(a.numpy(), again.numpy())
  assert not np.allclose(a.numpy(), other.numpy())
  assert abs(float(tf.math.reduce_std(a)) - 0.5) < 0.05


def test_label_flip_maps_y_to_c_minus_1_minus_y():
  labels = tf.constant([0, 3, 9], tf.int64)
  np.testing.assert_array_equal(flip_labels(labels, 1.0, 10).numpy(),
                                [9, 6, 0])
  np.testing.assert_array_equal(flip_labels(labels, 0.0, 10).numpy(),
                                [0, 3, 9])


def test_malicious_set_is_seeded_and_of_the_right_size():
  chosen = malicious_clients(100, 0.2, seed=5)
  assert len(chosen) == 20 == len(set(chosen))
  assert chosen == sorted(chosen) and all(0 <= c < 100 for c in chosen)
  assert malicious_clients(100, 0.2, seed=5) == chosen
  assert malicious_clients(100, 0.2, seed=6) != chosen
  assert malicious_clients(100, 0.0, seed=5) == []


@pytest.mark.parametrize("attack,message", [
    (AttackConfig(malicious_fraction=1.0), "malicious_fraction"),
    (AttackConfig(malicious_fraction=0.1, attack="poison"), "unknown attack"),
    (AttackConfig(malicious_fraction=0.1, attack_scale=0.0), "attack_scale"),
])
def test_bad_attack_settings_are_refused_in_one_line(attack, message):
  with pytest.raises(UserError) as e:
    SimulationConfig(attack=attack).validate()
  assert message in str(e.value) and "\n" not in str(e.value)


def distance(a, b):
  return float(np.sqrt(sum(np.sum((x - y) ** 2)
                           for x, y in zip(a.trainable, b.trainable))))


def test_median_holds_under_sign_flipping_while_the_mean_breaks(tmp_path):
  # All 10 clients report every round; 2 of them flip and boost their sign.
  attack = AttackConfig(malicious_fraction=0.2, attack="sign_flip",
                        attack_scale=10.0)
  runs = {}
  for aggregator in ("mean", "median"):
    for attacked in (False, True):
      cfg = run_config("local", aggregator, rounds=3,
                       attack=attack if attacked else None, num_clients=10,
                       clients_per_round=10)
      runs[aggregator, attacked] = final_weights(
          cfg, tmp_path / f"{aggregator}_{attacked}")
  median_shift = distance(runs["median", True][0], runs["median", False][0])
  mean_shift = distance(runs["mean", True][0], runs["mean", False][0])
  assert all(np.all(np.isfinite(w)) for w in runs["median", True][0].trainable)
  assert mean_shift > 5 * median_shift
  accuracy = {key: summary["final_test_accuracy"]
              for key, (_, summary) in runs.items()}
  # 30-example clients make the median itself noisy; the mean collapses.
  assert accuracy["median", True] > accuracy["median", False] - 0.15, accuracy
  assert accuracy["mean", True] < accuracy["mean", False] - 0.2, accuracy
  assert accuracy["median", True] > accuracy["mean", True] + 0.1, accuracy
  out = tmp_path / "mean_True"
  chosen = json.loads((out / "malicious_clients.json").read_text())
  assert len(chosen["malicious_clients"]) == 2
  rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text()
          .splitlines()]
  train_rows = [r for r in rows if "malicious_reported" in r]
  assert train_rows and all(r["malicious_reported"] == 2 and
                            r["malicious_clients"] ==
                            chosen["malicious_clients"] for r in train_rows)
