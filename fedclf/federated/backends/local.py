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

With FedAvg's example-weighted mean (the base `Aggregator`), the group
graph returns the weighted sum of its clients' updates instead of the
updates, and the round adds these up: it holds one model's worth of sums
instead of every client's update (100 McMahan-CNN clients would otherwise
hold 660 MB of deltas, and as much again while averaging them).
Aggregators that need all updates at once (DP clipping, medians) get the
full list.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated import server_optimizers
from fedclf.federated.aggregators import Aggregator
from fedclf.federated.attacks import attack_output
from fedclf.federated.attacks import flip_labels
from fedclf.federated.backends import batched
from fedclf.federated.backends.batched import BatchedClients
from fedclf.federated.backends.protocol import BackendSpec
from fedclf.federated.backends.protocol import ClientTask
from fedclf.federated.client_work import ClientOutput
from fedclf.federated.client_work import error_summary
from fedclf.federated.client_work import failed_output
from fedclf.federated.client_work import IndexedBatches
from fedclf.federated.client_work import with_reported_shapes
from fedclf.federated.aggregators import weighted_mean
from fedclf.federated.rounds import ServerState


class LocalBackend:
  """Runs an `Algorithm`'s rounds in this process."""

  name = "local"
  runtime = None  # no TFF runtime: everything runs in this process

  def __init__(self, spec: BackendSpec):
    algorithm = spec.algorithm
    self.algorithm = algorithm
    self.work = algorithm.client_work
    self.parallel = max(1, spec.parallel_clients)
    self.batch_shape = spec.batch_shape
    self.expected_clients = spec.clients_per_round
    self.num_clients = spec.num_clients
    self.seed = spec.seed
    self.attack = spec.attack
    self.num_classes = spec.num_classes
    self.x = tf.Variable(spec.x_train, trainable=False, name="x_train")
    self.y = tf.Variable(spec.y_train.astype(np.int64), trainable=False,
                         name="y_train")
    self.batched = _batched_clients(spec, self.x, self.y)
    if self.batched is not None:
      self.parallel = self.batched.group
    self.replicas = ([] if self.batched else
                     [spec.model_fn() for _ in range(self.parallel)])
    # How the clients train, for summary.json: `auto` decides per model.
    self.execution = (
        f"batched, {self.parallel} clients per step" if self.batched else
        f"replicas, {self.parallel} clients in parallel")
    self.velocity = [[
        tf.Variable(tf.zeros_like(v), trainable=False)
        for v in m.trainable_variables
    ] for m in self.replicas]
    # A subclass that keeps the base `combine` (e.g. only a different TFF
    # factory) still averages the same way.
    self.streams = (
        type(algorithm.aggregator).combine is Aggregator.combine and
        type(algorithm.aggregator).combine_with_state is
        Aggregator.combine_with_state)
    self._train_group = tf.function(self._train_group_impl)
    self._train_group_summed = tf.function(self._train_group_summed_impl)

  def round_metrics(self) -> Dict[str, float]:
    return {}  # nothing crosses a wire in this process

  def close(self) -> None:
    """Nothing to free: the graphs and variables go with the object."""

  # -- server side ------------------------------------------------------
  def initial_state(self, model: tf.keras.Model) -> ServerState:
    trainable = [v.numpy() for v in model.trainable_variables]
    return ServerState(
        trainable=trainable,
        non_trainable=[v.numpy() for v in model.non_trainable_variables],
        optimizer=_to_numpy(
            server_optimizers.initialize(self.algorithm.server,
                                         [tf.constant(w) for w in trainable])),
        extra=[t.numpy() for t in self.work.initial_server_extra(trainable)],
        aggregator=[np.asarray(a) for a in
                    self.algorithm.aggregator.initial_state(trainable)])

  def initial_client_state(self, state: ServerState) -> List[np.ndarray]:
    return [np.asarray(t) for t in
            self.work.initial_client_state(state.trainable)]

  # -- client side ------------------------------------------------------
  def _train_slots(self, trainable, non_trainable, extra, matrices, steps,
                   examples, client_states, seeds,
                   malicious) -> List[ClientOutput]:
    if self.batched is not None:
      return self.batched.train(trainable, non_trainable, extra, matrices,
                                steps, examples, client_states, seeds,
                                malicious)
    outputs = []
    for slot in range(self.parallel):
      labels = (flip_labels(self.y, malicious[slot], self.num_classes)
                if self.attack.on_labels else self.y)
      batches = IndexedBatches(self.x, labels, matrices[slot], steps[slot])
      out = self.work.train(
          self.replicas[slot], self.velocity[slot], trainable, non_trainable,
          batches, examples[slot], client_states[slot], extra, seeds[slot])
      outputs.append(attack_output(out, malicious[slot], seeds[slot],
                                   self.attack))
    return outputs

  def _train_group_impl(self, *args):
    return [vars(out) for out in self._train_slots(*args)]

  def _train_group_summed_impl(self, *args_and_active):
    """Like `_train_group_impl`, but the updates come back summed over the
    active slots (weighted as `WeightedSums` expects), not per client."""
    *args, active = args_and_active
    outputs = self._train_slots(*args)
    weights = [a * out.weight for a, out in zip(tf.unstack(active), outputs)]
    trained = [a * (1.0 - out.dropped)
               for a, out in zip(tf.unstack(active), outputs)]

    def total(field, scales):
      parts = [getattr(out, field) for out in outputs]
      return [tf.add_n([c * p[i] for c, p in zip(scales, parts)])
              for i in range(len(parts[0]))]

    group_sums = {"delta": total("delta", weights),
                  "non_trainable": total("non_trainable", weights),
                  "extra": total("extra_delta", trained),
                  "weight": tf.add_n(weights), "trained": tf.add_n(trained)}
    light = [dict(vars(out), delta=[], non_trainable=[], extra_delta=[])
             for out in outputs]
    return light, group_sums

  def _train_tasks(self, inputs, group: Sequence[ClientTask],
                   client_states: Dict[int, List[np.ndarray]],
                   blank: List[np.ndarray],
                   sums: Optional[WeightedSums]) -> List[ClientOutput]:
    """One call of the group graph for up to `parallel` tasks; with `sums`,
    their updates are added to `sums` (only if the call succeeds)."""
    real = len(group)
    group = [ClientTask(*t) for t in group]
    # Pad the last group with zero-step clients so the graph is traced once.
    while len(group) < self.parallel:
      group.append(ClientTask(-1, np.full(self.batch_shape, -1, np.int32), 0,
                              0, np.zeros(2, np.int64)))
    matrices = tf.constant(np.stack([t[1] for t in group]))
    steps = tf.constant([t[2] for t in group], tf.int32)
    examples = tf.constant([t[3] for t in group], tf.float32)
    cstates = [[tf.constant(v) for v in client_states.get(t[0], blank)]
               for t in group]
    seeds = tf.constant(np.stack([t[4] for t in group]), tf.int64)
    malicious = tf.constant([t.malicious for t in group], tf.float32)
    args = (*inputs, matrices, steps, examples, cstates, seeds, malicious)
    if sums is None:
      results = self._train_group(*args)
    else:
      active = tf.constant([1.0] * real + [0.0] * (self.parallel - real))
      results, group_sums = self._train_group_summed(*args, active)
      sums.add(group_sums)
    return [ClientOutput(**r) for r in results[:real]]

  def train_clients(self, state: ServerState, tasks: Sequence[ClientTask],
                    client_states: Dict[int, List[np.ndarray]],
                    round_num: int = 0,
                    sums: Optional[WeightedSums] = None
                    ) -> List[ClientOutput]:
    """Local training of every task's client; outputs in task order. With
    `sums`, the updates are added to them and left out of the outputs."""
    inputs = ([tf.constant(w) for w in state.trainable],
              [tf.constant(w) for w in state.non_trainable],
              [tf.constant(w) for w in state.extra])
    blank = self.initial_client_state(state)
    order = self._training_order(tasks)
    outputs = []
    for start in range(0, len(tasks), self.parallel):
      group = [tasks[i] for i in order[start:start + self.parallel]]
      try:
        outputs.extend(self._train_tasks(inputs, group, client_states, blank,
                                         sums))
      except tf.errors.OpError:
        # Some client of the group raised; rerun them one at a time so that
        # only the failing ones are dropped.
        outputs.extend(
            self._train_alone(inputs, task, state, client_states, blank,
                              round_num, sums) for task in group)
    in_task_order = [None] * len(tasks)
    for i, out in zip(order, outputs):
      in_task_order[i] = out
    return with_reported_shapes(in_task_order)

  def _training_order(self, tasks: Sequence[ClientTask]) -> List[int]:
    """The order in which tasks are grouped: batched, the most local steps
    first, so that a group's clients run about as many steps as its longest
    and each step's active clients are the group's first ones (only they
    are computed); in replicas, as given."""
    if self.batched is None:
      return list(range(len(tasks)))
    return sorted(range(len(tasks)), key=lambda i: -int(tasks[i][2]))

  def _train_alone(self, inputs, task: ClientTask, state: ServerState,
                   client_states: Dict[int, List[np.ndarray]],
                   blank: List[np.ndarray], round_num: int,
                   sums: Optional[WeightedSums]) -> ClientOutput:
    try:
      return self._train_tasks(inputs, [task], client_states, blank, sums)[0]
    except tf.errors.OpError as e:
      logging.warning(
          "round %d: local training of client %d raised %s (%s); the client "
          "is dropped from the round", round_num, task[0], type(e).__name__,
          error_summary(e.message))
      # Weight 0: it adds nothing to `sums`.
      return failed_output(state.trainable, state.non_trainable, state.extra,
                           client_states.get(task[0], blank))

  def run_round(self, state: ServerState, tasks: Sequence[ClientTask],
                client_states: Dict[int, List[np.ndarray]], round_num: int
                ) -> Tuple[ServerState, List[ClientOutput]]:
    """Trains the tasks' clients, aggregates, updates the server."""
    sums = WeightedSums() if self.streams else None
    outputs = self.train_clients(state, tasks, client_states, round_num,
                                 sums)
    if sums is not None and not sums.totals:
      # Every client raised: nothing to average (the caller stops the run).
      return dataclasses.replace(state, round_num=round_num), outputs
    return self.aggregate(state, outputs, round_num, sums), outputs

  # -- aggregation and server update ------------------------------------
  def aggregate(self, state: ServerState, outputs: Sequence[ClientOutput],
                round_num: int, sums: Optional[WeightedSums] = None
                ) -> ServerState:
    """Aggregates client outputs (or the `sums` they were folded into) and
    applies the server optimizer."""
    alg = self.algorithm
    aggregator_state = state.aggregator
    if sums is not None:
      mean_delta, mean_non_trainable, mean_extra = sums.means()
    else:
      weights = [o.weight for o in outputs]
      mean_delta, aggregator_state = alg.aggregator.combine_with_state(
          [o.delta for o in outputs], weights, self.expected_clients,
          (self.seed, round_num), state.aggregator)
      mean_non_trainable = weighted_mean([o.non_trainable for o in outputs],
                                         weights)
      # An unweighted mean over the clients that trained (not dropped).
      mean_extra = weighted_mean([o.extra_delta for o in outputs],
                                 [1.0 - o.dropped for o in outputs])
    if mean_extra:
      # FedNova's and FedDyn's server-side step (identity for the others).
      mean_delta = self.work.server_delta(
          mean_delta, mean_extra, [tf.constant(e) for e in state.extra],
          tf.constant(len(outputs) / self.num_clients))
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
        round_num=round_num,
        aggregator=[np.asarray(a) for a in aggregator_state])


class WeightedSums:
  """Running sums for the example-weighted mean of the clients' deltas and
  non-trainable weights, and the unweighted mean of the extra deltas of the
  clients that trained (the means `aggregate` computes otherwise)."""

  def __init__(self):
    self.totals: Dict[str, object] = {}

  def add(self, group_sums: Dict[str, object]) -> None:
    """Adds one group's sums (as `_train_group_summed_impl` returns)."""
    if not self.totals:
      self.totals = dict(group_sums)
      return
    self.totals = tf.nest.map_structure(lambda a, b: a + b, self.totals,
                                        group_sums)

  def means(self):
    """(mean delta, mean non-trainable, mean extra delta)."""
    t = self.totals
    return ([d / t["weight"] for d in t["delta"]],
            [n / t["weight"] for n in t["non_trainable"]],
            [e / t["trained"] for e in t["extra"]])


def _batched_clients(spec: BackendSpec, x, y) -> Optional[BatchedClients]:
  """The batched engine if `spec.client_batching` asks for it and the model
  and client work allow it (None: replica mode)."""
  if spec.client_batching == "off":
    return None
  model = spec.model_fn()
  reason = batched.unsupported_reason(spec, model)
  if reason is not None and spec.client_batching == "on":
    raise UserError(f"--client_batching=on: {reason}")
  if reason is None and spec.client_batching == "auto":
    reason = batched.auto_declines(model)
  if reason is not None:
    logging.info("client batching off: %s; clients train in model "
                 "replicas", reason)
    return None
  engine = BatchedClients(spec, model, x, y)
  logging.info("client batching on: up to %d clients per batched step",
               engine.group)
  return engine


def _to_numpy(structure):
  return tf.nest.map_structure(lambda t: np.asarray(t), structure)
