"""The `local` backend: a fast in-process simulation in plain TensorFlow.

Clients train in groups of `parallel_clients`: one compiled graph holds a
separate model replica per slot, and TensorFlow's executor runs the
independent per-client loops concurrently on the available cores. The
training data lives once in device memory; a client is only a matrix of
example indices per local step, read by a while loop inside the graph (no
per-client tf.data pipeline, which costs tens of milliseconds per client),
and the graph is traced once per run.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from fedclf.federated import server_optimizers
from fedclf.federated.algorithms import Algorithm
from fedclf.federated.client_work import ClientOutput
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

  def train_clients(self, state: ServerState, tasks: Sequence[ClientTask],
                    client_states: Dict[int, List[np.ndarray]]
                    ) -> List[ClientOutput]:
    """Local training of every task's client; outputs in task order."""
    trainable = [tf.constant(w) for w in state.trainable]
    non_trainable = [tf.constant(w) for w in state.non_trainable]
    extra = [tf.constant(w) for w in state.extra]
    blank = self.initial_client_state(state)
    outputs = []
    for start in range(0, len(tasks), self.parallel):
      group = list(tasks[start:start + self.parallel])
      real = len(group)
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
      results = self._train_group(trainable, non_trainable, extra, matrices,
                                  steps, examples, cstates, seeds)
      outputs.extend(ClientOutput(**r) for r in results[:real])
    return outputs

  def run_round(self, state: ServerState, tasks: Sequence[ClientTask],
                client_states: Dict[int, List[np.ndarray]], round_num: int
                ) -> Tuple[ServerState, List[ClientOutput]]:
    """Trains the tasks' clients, aggregates, updates the server."""
    outputs = self.train_clients(state, tasks, client_states)
    return self.aggregate(state, outputs, round_num), outputs

  # -- aggregation and server update ------------------------------------
  def aggregate(self, state: ServerState, outputs: Sequence[ClientOutput],
                round_num: int) -> ServerState:
    """Aggregates client outputs and applies the server optimizer."""
    alg = self.algorithm
    mean_delta = alg.aggregator.combine(
        [o.delta for o in outputs], [o.weight for o in outputs],
        self.expected_clients, (self.seed, round_num))
    mean_non_trainable = weighted_mean([o.non_trainable for o in outputs],
                                       [o.weight for o in outputs])
    opt_state = tf.nest.map_structure(tf.constant, state.optimizer)
    opt_state, trainable = server_optimizers.apply(
        alg.server, opt_state, [tf.constant(w) for w in state.trainable],
        mean_delta)
    extra = state.extra
    if state.extra:
      # An unweighted mean over the clients that trained (not dropped).
      mean_extra = weighted_mean([o.extra_delta for o in outputs],
                                 [1.0 - o.dropped for o in outputs])
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


def _to_numpy(structure):
  return tf.nest.map_structure(lambda t: np.asarray(t), structure)
