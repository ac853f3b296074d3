"""Centered clipping (`--aggregator=centered_clip`) and the aggregator state
it keeps across rounds: hand-computed updates, a checkpoint/resume run, the
two backends agreeing; and a client whose training raises under FedNova
with an aggregator that stacks every output.

One module so TFF (~50 s to import) loads once for its backend tests.
"""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from fedclf.data import DataConfig
from fedclf.errors import UserError
from fedclf.federated import Algorithm
from fedclf.federated import AlgorithmConfig
from fedclf.federated import FederatedRunConfig
from fedclf.federated import Simulation
from fedclf.federated import SimulationConfig
from fedclf.federated import simulation as simulation_lib
from fedclf.federated.aggregation.centered_clip import CenteredClipParams
from fedclf.federated.aggregation.choice import build_aggregator
from fedclf.federated.algorithms.fednova import FedNovaSGD
from fedclf.federated.client_work import failed_output
from fedclf.federated.client_work import masked_loss_and_correct
from fedclf.federated.client_work import with_reported_shapes
from fedclf.federated.rounds import Checkpointer
from fedclf.federated.rounds import ServerState
from fedclf.partition import PartitionConfig
from fedclf.plugin_config import build_params
from fedclf.registry import AGGREGATORS
from tests.federated.simulation_runs import poison_examples
from tests.federated.simulation_runs import with_own_tff_data


def clip(radius, iterations=1):
  return build_aggregator("centered_clip", CenteredClipParams(
      centered_clip_radius=radius, centered_clip_iterations=iterations))


def rounds_of(aggregator, rounds_of_updates, weights):
  """The aggregates of consecutive rounds, the state carried between."""
  state = aggregator.initial_state(
      [np.zeros(np.shape(t), np.float32) for t in rounds_of_updates[0][0]])
  out = []
  for updates in rounds_of_updates:
    deltas = [[tf.constant(t, tf.float32) for t in u] for u in updates]
    combined, state = aggregator.combine_with_state(deltas, weights, 5,
                                                    (0, 1), state)
    out.append([t.numpy() for t in combined])
  return out, state


# Four reporting clients of one scalar weight: client 3 an outlier,
# client 4 dropped (weight 0: its zero update must not vote).
SCALARS = [[[1.0]], [[2.0]], [[3.0]], [[100.0]], [[0.0]]]
WEIGHTS = [1.0, 2.0, 1.0, 1.0, 0.0]


def test_two_rounds_by_hand():
  # tau = 1.5, v0 = 0. Round 1: differences 1, 2, 3, 100 clip to
  # 1, 1.5, 1.5, 1.5: v1 = 5.5 / 4 = 1.375. Round 2 from v1: -0.375,
  # 0.625, 1.625, 98.625 clip to -0.375, 0.625, 1.5, 1.5: v2 = 1.375 +
  # 3.25 / 4 = 2.1875. The outlier moved v by at most tau / 4 a round.
  (first,), (second,) = rounds_of(clip(1.5), [SCALARS, SCALARS], WEIGHTS)[0]
  np.testing.assert_allclose(first, [1.375])
  np.testing.assert_allclose(second, [2.1875])
  # Two steps in one round are the same two moves.
  (both,), = rounds_of(clip(1.5, iterations=2), [SCALARS], WEIGHTS)[0]
  np.testing.assert_allclose(both, [2.1875])


def numpy_centered_clip(updates, weights, center, radius, iterations):
  """The rule on flattened numpy updates of the clients with weight > 0."""
  points = np.array([np.concatenate([np.ravel(t) for t in u])
                     for u, w in zip(updates, weights) if w > 0])
  for _ in range(iterations):
    diffs = points - center
    norms = np.linalg.norm(diffs, axis=1)
    center = center + (np.minimum(1.0, radius / norms)[:, None] *
                       diffs).mean(0)
  return center


def test_two_tensors_two_rounds_against_numpy():
  # The norm is over all of a client's tensors together.
  first = [([1.0, 2.0], [[0.0]]), ([2.0, 1.0], [[1.0]]),
           ([3.0, 3.0], [[2.0]]), ([100.0, -100.0], [[50.0]]),
           ([0.0, 0.0], [[0.0]])]
  second = [([2.0, 2.0], [[1.0]]), ([1.0, 3.0], [[0.5]]),
            ([2.5, 2.0], [[1.5]]), ([-80.0, 90.0], [[-40.0]]),
            ([0.0, 0.0], [[0.0]])]
  out, state = rounds_of(clip(2.0, iterations=3), [first, second], WEIGHTS)
  v1 = numpy_centered_clip(first, WEIGHTS, np.zeros(3), 2.0, 3)
  v2 = numpy_centered_clip(second, WEIGHTS, v1, 2.0, 3)
  for got, want in zip(out, [v1, v2]):
    np.testing.assert_allclose(
        np.concatenate([got[0], got[1].ravel()]), want, rtol=1e-5)
  np.testing.assert_allclose(np.concatenate([state[0], state[1].ravel()]),
                             v2, rtol=1e-5)
  assert state[1].shape == (1, 1)


def test_stateless_combine_starts_from_zero():
  deltas = [[tf.constant(t, tf.float32) for t in u] for u in SCALARS]
  np.testing.assert_allclose(clip(1.5).combine(deltas, WEIGHTS, 5, (0, 1))[0],
                             [1.375])


@pytest.mark.parametrize("values,message", [
    ({"centered_clip_radius": 0.0}, "centered_clip_radius"),
    ({"centered_clip_radius": -1.0}, "centered_clip_radius"),
    ({"centered_clip_iterations": 0}, "centered_clip_iterations"),
])
def test_bad_params_are_refused_in_one_line(values, message):
  with pytest.raises(UserError) as e:
    build_params(AGGREGATORS.params_class("centered_clip"), values,
                 "aggregator centered_clip")
  assert message in str(e.value) and "\n" not in str(e.value)


def state_of(value, aggregator=()):
  return ServerState(trainable=[np.full((3,), value, np.float32)],
                     non_trainable=[], optimizer={}, extra=[],
                     round_num=1, aggregator=list(aggregator))


def test_checkpoint_keeps_the_aggregator_state(tmp_path):
  saved = state_of(1.0, [np.arange(3, dtype=np.float32)])
  Checkpointer(str(tmp_path)).save(saved, {}, "tag")
  _, state, _ = Checkpointer(str(tmp_path)).restore_latest(
      state_of(0.0, [np.zeros(3, np.float32)]), "tag")
  np.testing.assert_array_equal(state.aggregator[0], [0.0, 1.0, 2.0])


def test_checkpoint_without_aggregator_state_still_loads(tmp_path):
  # As written before `ServerState.aggregator` existed: no such arrays.
  Checkpointer(str(tmp_path)).save(state_of(1.0), {}, "tag")
  with np.load(tmp_path / "round_00001.npz") as data:
    assert not any(k.startswith("aggregator/") for k in data.files)
  _, state, _ = Checkpointer(str(tmp_path)).restore_latest(state_of(0.0),
                                                            "tag")
  assert state.aggregator == [] and state.trainable[0][0] == 1.0


# -- runs ---------------------------------------------------------------------

# Small enough that the digits MLP's updates are clipped.
PARAMS = CenteredClipParams(centered_clip_radius=0.3,
                            centered_clip_iterations=2)


def run_config(backend, rounds=3, checkpoint_every=0, algorithm="fedavg",
               aggregator="centered_clip", params=PARAMS):
  return FederatedRunConfig(
      data=DataConfig(name="digits", train_limit=300, test_limit=100),
      partitioner="iid",
      partition=PartitionConfig(num_clients=6, seed=1),
      model_name="mlp",
      simulation=SimulationConfig(
          algorithm=algorithm,
          algorithm_config=AlgorithmConfig(client_lr=0.05, local_epochs=1,
                                           local_batch_size=16),
          num_clients=6, clients_per_round=4, rounds=rounds,
          eval_every=rounds, checkpoint_every=checkpoint_every,
          per_client_eval=0, parallel_clients=2, backend=backend, seed=1,
          client_dropout=0.2, aggregator=aggregator,
          aggregator_params=params))


def final_run(cfg, out_dir, resume=False):
  sim = Simulation(cfg, str(out_dir), {"test": True}, resume)
  try:
    summary = sim.run()
  finally:
    sim.close()
  return sim.final_state, summary


def test_resumed_run_matches_uninterrupted(tmp_path, caplog):
  full, summary = final_run(run_config("local", rounds=4), tmp_path / "a")
  assert summary["aggregator"] == "centered_clip"
  assert any(np.abs(a).sum() > 0 for a in full.aggregator)
  first = run_config("local", rounds=3, checkpoint_every=1)
  final_run(first, tmp_path / "b")
  with caplog.at_level("INFO"):
    resumed, _ = final_run(run_config("local", rounds=4, checkpoint_every=1),
                           tmp_path / "b", resume=True)
  assert "(round 3)" in caplog.text  # it trained round 4 only
  for a, b in zip(full.trainable + full.aggregator,
                  resumed.trainable + resumed.aggregator):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_resuming_without_the_state_would_differ(tmp_path):
  # The state matters: the same rounds from a zero aggregate differ.
  agg = build_aggregator("centered_clip", PARAMS)
  deltas = [[tf.constant([float(i), 1.0])] for i in range(4)]
  with_history, _ = agg.combine_with_state(deltas, [1.0] * 4, 4, (0, 1),
                                           [np.array([5.0, 5.0])])
  assert not np.allclose(with_history[0].numpy(),
                         agg.combine(deltas, [1.0] * 4, 4, (0, 1))[0])


def checked_objective(model, images, labels, mask, seed=None):
  # Raises at run time (InvalidArgumentError) on a client with bad images,
  # as in tests/faults/client_faults_test.py.
  images = tf.debugging.assert_all_finite(images, "client images are bad")
  return masked_loss_and_correct(model, images, labels, mask, seed)


def checked_fednova(name, config, params=None):
  del name, params  # Unused: FedNova has no hyper-parameters of its own.
  return Algorithm("fednova", FedNovaSGD(config).with_objective(
      checked_objective), config.server)


def poison(sim, client):
  poison_examples(sim, sim.clients[client], np.nan)


def rows(out_dir):
  with open(os.path.join(out_dir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_failed_output_takes_the_reported_shapes():
  trained = dataclasses.replace(
      failed_output([np.ones(2)], [], [], []), failed=np.float32(0.0),
      extra_delta=[np.float32(3.0), np.float32(2.0)])
  failed = failed_output([np.ones(2)], [], [], [])
  fixed = with_reported_shapes([failed, trained])
  assert [np.shape(e) for e in fixed[0].extra_delta] == [(), ()]
  assert all(e == 0 for e in fixed[0].extra_delta)
  assert fixed[1] is trained
  assert with_reported_shapes([failed])[0].extra_delta == []


@pytest.mark.parametrize("backend", ["local", "tff"])
def test_fednova_client_raising_under_median(tmp_path, tmp_path_factory,
                                             monkeypatch, caplog, backend):
  monkeypatch.setattr(simulation_lib, "build_algorithm", checked_fednova)
  cfg = run_config(backend, rounds=2 if backend == "local" else 1,
                   algorithm="fednova", aggregator="median", params=None)
  cfg = with_own_tff_data(dataclasses.replace(
      cfg, simulation=dataclasses.replace(
          cfg.simulation, clients_per_round=6, client_dropout=0.0)),
                          tmp_path_factory.mktemp("tff_data"))
  sim = Simulation(cfg, str(tmp_path), {})
  initial = [v.numpy() for v in sim.eval_model.trainable_variables]
  poison(sim, 3)
  with caplog.at_level("WARNING"):
    try:
      sim.run()
    finally:
      sim.close()
  assert "local training of client 3 raised" in caplog.text
  for row in rows(tmp_path):
    assert row["clients_failed"] == 1 and row["clients_reported"] == 6
  assert all(np.isfinite(w).all() for w in sim.final_state.trainable)
  assert any(not np.allclose(a, b) for a, b in
             zip(initial, sim.final_state.trainable))


def test_backends_agree(tmp_path):
  local, _ = final_run(run_config("local"), tmp_path / "local")
  on_tff, summary = final_run(run_config("tff"), tmp_path / "tff")
  assert summary["backend"] == "tff" and summary["rounds_run"] == 3
  for a, b in zip(local.trainable + local.aggregator,
                  on_tff.trainable + on_tff.aggregator):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  assert len(on_tff.aggregator) == len(on_tff.trainable)
