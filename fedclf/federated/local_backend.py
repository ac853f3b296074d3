"""The `local` backend: a fast in-process simulation in plain TensorFlow.

Clients train in groups of `parallel_clients`: one compiled graph holds a
separate model replica per slot, and TensorFlow's executor runs the
independent per-client loops concurrently on the available cores. The
training data lives once in device memory; a client is only a matrix of
example indices per local step, read by a while loop inside the graph (no
per-client tf.data pipeline, which costs tens of milliseconds per client),
and the graph is traced once per run.

A client whose local training raises at run time (a `tf.errors.OpError`,
e.g. a check in a plugin's client work failing on its data) is dropped from
the round like a client whose update is NaN/Inf: its group is rerun one
client at a time so the others still report, and it contributes zero
weight, with a log line and `failed = 1` in its output.

With FedAvg's example-weighted mean (the base `Aggregator`), each group's
updates are folded into running sums as soon as the group finishes, so a
round holds one model's worth of sums instead of every client's update
(100 McMahan-CNN clients would otherwise hold 660 MB of deltas, and as
much again while averaging them); aggregators that need all updates at
once (DP clipping, medians) get the full list.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from fedclf.federated import server_optimizers
from fedclf.federated.aggregators import Aggregator
from fedclf.federated.algorithms import Algorithm
from fedclf.federated.client_work import ClientOutput
from fedclf.federated.client_work import error_summary
from fedclf.federated.client_work import failed_output
from fedclf.federated.client_work import IndexedBatches
from fedclf.federated.aggregators import weighted_mean
from fedclf.federated.rounds import ServerState

# (client id, step x batch index matrix, steps, examples, [2] int64 seed)
ClientTask = Tuple[int, np.ndarray, int, int, np.ndarray]


class LocalBackend:
  """Runs an `Algorithm`'s rounds in this process."""

  name = "local"

  def __init__(self, algorithm: Algorithm,
               model_fn: Callable[[], tf.keras.Model], x_train: np.ndarray,
               y_train: np.ndarray, parallel_clients: int,
               batch_shape: Tuple[int, int], expected_clients: int,
               num_clients: int, seed: int):
    self.algorithm = algorithm
    self.work = algorithm.client_work
    self.parallel = max(1, parallel_clients)
    self.batch_shape = batch_shape
    self.expected_clients = expected_clients
    self.num_clients = num_clients
    self.seed = seed
    self.replicas = [model_fn() for _ in range(self.parallel)]
    self.velocity = [[
        tf.Variable(tf.zeros_like(v), trainable=False)
        for v in m.trainable_variables
    ] for m in self.replicas]
    self.x = tf.Variable(x_train, trainable=False, name="x_train")
    self.y = tf.Variable(y_train.astype(np.int64), trainable=False,
                         name="y_train")
    # A subclass that keeps the base `combine` (e.g. only a different TFF
    # factory) still averages the same way.
    self.streams = type(algorithm.aggregator).combine is Aggregator.combine
    self._train_group = tf.function(self._train_group_impl)

  # -- server side ------------------------------------------------------
  def initial_state(self, model: tf.keras.Model) -> ServerState:
    trainable = [v.numpy() for v in model.trainable_variables]
    return ServerState(
        trainable=trainable,
        non_trainable=[v.numpy() for v in model.non_trainable_variables],
        optimizer=_to_numpy(
            server_optimizers.initialize(self.algorithm.server,
                                         [tf.constant(w) for w in trainable])),
        extra=[t.numpy() for t in self.work.initial_server_extra(trainable)])

  def initial_client_state(self, state: ServerState) -> List[np.ndarray]:
    return [np.asarray(t) for t in
            self.work.initial_client_state(state.trainable)]

  # -- client side ------------------------------------------------------
  def _train_group_impl(self, trainable, non_trainable, extra, matrices,
                        steps, examples, client_states, seeds):
    outputs = []
    for slot in range(self.parallel):
      batches = IndexedBatches(self.x, self.y, matrices[slot], steps[slot])
      out = self.work.train(self.replicas[slot], self.velocity[slot],
                            trainable, non_trainable, batches, examples[slot],
                            client_states[slot], extra, seeds[slot])
      outputs.append(vars(out))
    return outputs

  def _train_tasks(self, inputs, group: Sequence[ClientTask],
                   client_states: Dict[int, List[np.ndarray]],
                   blank: List[np.ndarray]) -> List[ClientOutput]:
    """One call of the group graph for up to `parallel` tasks."""
    real = len(group)
    group = list(group)
    # Pad the last group with zero-step clients so the graph is traced once.
    while len(group) < self.parallel:
      group.append((-1, np.full(self.batch_shape, -1, np.int32), 0, 0,
                    np.zeros(2, np.int64)))
    matrices = tf.constant(np.stack([t[1] for t in group]))
    steps = tf.constant([t[2] for t in group], tf.int32)
    examples = tf.constant([t[3] for t in group], tf.float32)
    cstates = [[tf.constant(v) for v in client_states.get(t[0], blank)]
               for t in group]
    seeds = tf.constant(np.stack([t[4] for t in group]), tf.int64)
    results = self._train_group(*inputs, matrices, steps, examples, cstates,
                                seeds)
    return [ClientOutput(**r) for r in results[:real]]

  def train_clients(self, state: ServerState, tasks: Sequence[ClientTask],
                    client_states: Dict[int, List[np.ndarray]],
                    round_num: int = 0,
                    sums: Optional[WeightedSums] = None
                    ) -> List[ClientOutput]:
    """Local training of every task's client; outputs in task order. With
    `sums`, each output's update is folded into them and left out of it."""
    inputs = ([tf.constant(w) for w in state.trainable],
              [tf.constant(w) for w in state.non_trainable],
              [tf.constant(w) for w in state.extra])
    blank = self.initial_client_state(state)
    outputs = []
    for start in range(0, len(tasks), self.parallel):
      group = tasks[start:start + self.parallel]
      try:
        done = self._train_tasks(inputs, group, client_states, blank)
      except tf.errors.OpError:
        # Some client of the group raised; rerun them one at a time so that
        # only the failing ones are dropped.
        done = [self._train_alone(inputs, task, state, client_states, blank,
                                  round_num) for task in group]
      outputs.extend(sums.fold(o) if sums else o for o in done)
    return outputs

  def _train_alone(self, inputs, task: ClientTask, state: ServerState,
                   client_states: Dict[int, List[np.ndarray]],
                   blank: List[np.ndarray], round_num: int) -> ClientOutput:
    try:
      return self._train_tasks(inputs, [task], client_states, blank)[0]
    except tf.errors.OpError as e:
      logging.warning(
          "round %d: local training of client %d raised %s (%s); the client "
          "is dropped from the round", round_num, task[0], type(e).__name__,
          error_summary(e.message))
      return failed_output(state.trainable, state.non_trainable, state.extra,
                           client_states.get(task[0], blank))

  def run_round(self, state: ServerState, tasks: Sequence[ClientTask],
                client_states: Dict[int, List[np.ndarray]], round_num: int
                ) -> Tuple[ServerState, List[ClientOutput]]:
    """Trains the tasks' clients, aggregates, updates the server."""
    sums = WeightedSums() if self.streams else None
    outputs = self.train_clients(state, tasks, client_states, round_num,
                                 sums)
    return self.aggregate(state, outputs, round_num, sums), outputs

  # -- aggregation and server update ------------------------------------
  def aggregate(self, state: ServerState, outputs: Sequence[ClientOutput],
                round_num: int, sums: Optional[WeightedSums] = None
                ) -> ServerState:
    """Aggregates client outputs (or the `sums` they were folded into) and
    applies the server optimizer."""
    alg = self.algorithm
    if sums is not None:
      mean_delta, mean_non_trainable, mean_extra = sums.means()
    else:
      weights = [o.weight for o in outputs]
      mean_delta = alg.aggregator.combine(
          [o.delta for o in outputs], weights, self.expected_clients,
          (self.seed, round_num))
      mean_non_trainable = weighted_mean([o.non_trainable for o in outputs],
                                         weights)
      # An unweighted mean over the clients that trained (not dropped).
      mean_extra = weighted_mean([o.extra_delta for o in outputs],
                                 [1.0 - o.dropped for o in outputs])
    opt_state = tf.nest.map_structure(tf.constant, state.optimizer)
    opt_state, trainable = server_optimizers.apply(
        alg.server, opt_state, [tf.constant(w) for w in state.trainable],
        mean_delta)
    extra = state.extra
    if state.extra:
      participation = tf.constant(len(outputs) / self.num_clients)
      extra = [t.numpy() for t in self.work.update_server_extra(
          [tf.constant(e) for e in state.extra], mean_extra, participation)]
    return ServerState(
        trainable=[t.numpy() for t in trainable],
        non_trainable=([t.numpy() for t in mean_non_trainable]
                       if state.non_trainable else []),
        optimizer=_to_numpy(opt_state),
        extra=extra,
        round_num=round_num)


class WeightedSums:
  """Running sums for the example-weighted mean of the clients' deltas and
  non-trainable weights, and the unweighted mean of the extra deltas of the
  clients that trained (the means `aggregate` takes otherwise)."""

  def __init__(self):
    self.delta: List[tf.Tensor] = []
    self.non_trainable: List[tf.Tensor] = []
    self.extra: List[tf.Tensor] = []
    self.weight = tf.constant(0.0)
    self.trained = tf.constant(0.0)

  @staticmethod
  def _add(total: List[tf.Tensor], values, scale) -> List[tf.Tensor]:
    scaled = [scale * tf.convert_to_tensor(v) for v in values]
    return [t + v for t, v in zip(total, scaled)] if total else scaled

  def fold(self, output: ClientOutput) -> ClientOutput:
    """Adds `output`'s update; returns it without the update tensors."""
    weight = tf.cast(output.weight, tf.float32)
    trained = 1.0 - tf.cast(output.dropped, tf.float32)
    self.delta = self._add(self.delta, output.delta, weight)
    self.non_trainable = self._add(self.non_trainable, output.non_trainable,
                                   weight)
    self.extra = self._add(self.extra, output.extra_delta, trained)
    self.weight += weight
    self.trained += trained
    return dataclasses.replace(output, delta=[], non_trainable=[],
                               extra_delta=[])

  def means(self):
    """(mean delta, mean non-trainable, mean extra delta)."""
    return ([t / self.weight for t in self.delta],
            [t / self.weight for t in self.non_trainable],
            [t / self.trained for t in self.extra])


def _to_numpy(structure):
  return tf.nest.map_structure(lambda t: np.asarray(t), structure)
