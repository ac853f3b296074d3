"""The `tff` backend: each round is one TFF federated computation.

The algorithm's client work is the same `ClientWork.train` the `local`
backend runs, wrapped in a `tff.tensorflow.computation`; broadcast, aggregation
(`tff.aggregators.MeanFactory`, or `DifferentiallyPrivateFactory` for
DP-FedAvg) and the server optimizer (`tff.learning.optimizers`) are TFF's
own. A round that needs only the clients' example-weighted mean (the
default aggregator, no state on the clients) runs its TFF clients as slices
of clients (tff_slices.py): each worker returns one sum of its clients'
weighted updates, and the driver adds them and applies the same optimizer
(`_server_step`). The computation runs on workers owned by `TffRuntime` (one local
worker, or remote ones given as host:port; see tff_context.py and
tff_workers.py), so the C++ worker process is stopped on every exit path.

An aggregator without a TFF form (`tff_factory` returns None: median,
Krum, ... TFF has no federated form of them) still runs here: the round's
computation then returns the clients' outputs (CLIENTS-placed values come
back to the driver as a list), and the driver combines them and applies the
server optimizer with the `local` backend's own code (`DriverAggregation`),
so both backends agree. An aggregator with state across rounds
(centered_clip) has no TFF form and runs there too: its state is
`ServerState.aggregator`, which the borrowed code initializes and updates.

A client whose local training raises on the worker (TFF reports it as a
gRPC INTERNAL error for the whole round) is found by running each client's
update alone, dropped with a log line (`failed = 1` in its output, as on
the `local` backend), and the round is rerun without it.

The clients' examples never cross the wire: the driver writes the training
arrays once to files named by their checksum (tff_data.py; a directory the
workers see, `BackendSpec.tff_data_dir`), checks at start that every worker
reads the same arrays, and each round sends a client's index matrix; the
client's batches are gathered on the worker from the memory-mapped files.
`round_metrics` reports the gRPC bytes of each round (`WireTraffic`).

Importing this module imports TFF (~50 s); `local` runs never do (the
registry's `tff` factory imports it on first use).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
from typing import List, Tuple

from absl import logging
import grpc
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl

from fedclf.errors import UserError
from fedclf.federated.attacks import attack_output
from fedclf.federated.attacks import flip_labels
from fedclf.federated.backends.local import LocalBackend
from fedclf.federated.backends.protocol import BackendSpec
from fedclf.federated.backends.protocol import ClientTask
from fedclf.federated.aggregators import Aggregator
from fedclf.federated.backends import tff_data
from fedclf.federated.backends import tff_slices
from fedclf.federated.backends.tff_context import TffRuntime
from fedclf.federated.client_work import ClientOutput
from fedclf.federated.client_work import error_summary
from fedclf.federated.client_work import failed_output
from fedclf.federated.client_work import IndexedBatches
from fedclf.federated.client_work import with_reported_shapes
from fedclf.federated.config import ServerOptimizerConfig
from fedclf.federated.rounds import ServerState


# The most clients a worker trains in one call unless BackendSpec says
# otherwise. With one TFF client per client, TFF's C++ worker holds every
# client of a call at once (its broadcast copy of the weights, its update,
# its weighted update: ~25 MB each for the McMahan CNN; a 100-client call
# took 3 GiB). A slice round (tff_slices.py) holds one replica per call
# whatever its size; there 10 gives 100 clients as 10 calls, which 2 cores
# (or 2 workers) share evenly, where 20 would leave one core idle for the
# fifth call.
DEFAULT_CLIENTS_PER_CALL = 10


def subrounds(clients_per_round: int, clients_per_call: int,
              workers: int) -> int:
  """Slices a round's clients are split into: enough that none exceeds
  `clients_per_call`, a multiple of `workers` (each gets the same number),
  at least one per worker."""
  calls = -(-clients_per_round // max(clients_per_call, 1))
  return -(-max(calls, workers) // workers) * workers


# A client's scalar results the round returns (as rows of one summed
# matrix, see `report_row`), in the order of the matrix's columns.
REPORTED_NUMBERS = ("dropped", "loss_sum", "correct", "examples", "steps")


def tff_server_optimizer(config: ServerOptimizerConfig):
  """The tff.learning optimizer for `config` (same rule as
  `server_optimizers.apply`)."""
  opt = tff.learning.optimizers
  lr = config.learning_rate
  if config.name == "sgd":
    return opt.build_sgdm(learning_rate=lr)
  if config.name == "momentum":
    return opt.build_sgdm(learning_rate=lr, momentum=config.momentum)
  if config.name == "adam":
    return opt.build_adam(learning_rate=lr, beta_1=config.beta_1,
                          beta_2=config.beta_2, epsilon=config.epsilon)
  if config.name == "yogi":
    return opt.build_yogi(
        learning_rate=lr, beta_1=config.beta_1, beta_2=config.beta_2,
        epsilon=config.epsilon,
        initial_preconditioner_value=config.initial_accumulator)
  return opt.build_adagrad(
      learning_rate=lr,
      initial_preconditioner_value=config.initial_accumulator,
      epsilon=config.epsilon)


def _at_server(t):
  return tff.FederatedType(t, tff.SERVER)


def _at_clients(t):
  return tff.FederatedType(t, tff.CLIENTS)


def _specs(arrays) -> List[tf.TensorSpec]:
  return [tf.TensorSpec(a.shape, tf.as_dtype(a.dtype)) for a in arrays]


def _types(arrays) -> List[tff.TensorType]:
  return [tff.TensorType(np.dtype(a.dtype), a.shape) for a in arrays]


@dataclasses.dataclass(frozen=True)
class _ValueTypes:
  """The types the backend's computations are built from."""
  trainable_spec: List[tf.TensorSpec]
  trainable: List[tff.TensorType]
  non_trainable: List[tff.TensorType]
  extra: List[tff.TensorType]
  client_state: List[tff.TensorType]
  # A client's step x batch example indices (-1: padding).
  matrix: tff.TensorType
  seed: tff.TensorType


@dataclasses.dataclass(frozen=True)
class _ServerComputations:
  """The server side of a round, shared by its two forms."""
  opt_t: object
  apply_optimizer: object
  update_extra: object
  server_delta: object  # None without extra deltas


class DriverAggregation:
  """The `local` backend's server side (initial state, aggregation and
  server update) for rounds whose clients ran on TFF: the same methods,
  borrowed rather than copied, so the two backends cannot drift apart."""

  initial_state = LocalBackend.initial_state
  aggregate = LocalBackend.aggregate

  def __init__(self, spec: BackendSpec):
    self.algorithm = spec.algorithm
    self.work = spec.algorithm.client_work
    self.expected_clients = spec.clients_per_round
    self.num_clients = spec.num_clients
    self.seed = spec.seed


class TffBackend:
  """Runs an `Algorithm`'s rounds as TFF computations."""

  name = "tff"

  def __init__(self, spec: BackendSpec):
    self.algorithm = spec.algorithm
    self.work = spec.algorithm.client_work
    self.model_fn = spec.model_fn
    self.batch_shape = spec.batch_shape
    self.num_clients = spec.num_clients
    self.attack = spec.attack
    self.num_classes = spec.num_classes
    # Aggregated on the driver when the aggregator has no TFF form.
    self._driver = (None if spec.algorithm.aggregator.tff_factory(
        spec.clients_per_round) is not None else DriverAggregation(spec))
    # How often the traced computations' Python bodies ran: set by the
    # build, unchanged by rounds (a growing count would be a computation
    # rebuilt per round, i.e. per-round graph growth).
    self.traces = 0
    self._round_traffic = {}
    self.runtime = TffRuntime(workers=spec.tff_workers)
    self.runtime.__enter__()
    try:
      # The files the workers read the training arrays from.
      self.data = tff_data.write_worker_data(
          spec.tff_data_dir or tff_data.default_data_dir(), spec.x_train,
          spec.y_train)
      self._build(spec)
      self._check_worker_data(spec.x_train, spec.y_train)
      self._split = self._split_context(spec)
    except BaseException:
      self.close()
      raise

  def close(self) -> None:
    if self.runtime is not None:
      self.runtime.__exit__(None, None, None)
      self.runtime = None

  def _split_context(self, spec: BackendSpec):
    """The context the round computation runs in when its clients are
    split into more slices than there are workers (None: the runtime's
    default context)."""
    self.clients_as = ("slices" if self._slices is not None else
                       "one_per_client")
    if self._slices is not None:
      # Each TFF client is one call's slice of clients.
      self.clients_per_call = self._slices.slice_size
      return None
    per_call = spec.tff_clients_per_call or DEFAULT_CLIENTS_PER_CALL
    workers = self.runtime.num_workers
    slices = self._subrounds(spec)
    # Unsplit, a worker trains its whole share of the round in one call.
    self.clients_per_call = -(-spec.clients_per_round // workers)
    if slices == workers or self._driver is not None:
      # Several workers already split by worker; the driver-aggregated
      # round returns each client's output, nothing to merge.
      return None
    if self._has_state:
      # Their per-client state comes back per client, which the split form
      # gets by retraining every slice after the merge: twice the work.
      logging.warning(
          "tff backend: %s keeps state on the clients, so its rounds are not "
          "split into calls of %d clients (all %d of a worker's clients "
          "train in one call)", self.algorithm.name, per_call,
          self.clients_per_call)
      return None
    self.clients_per_call = -(-spec.clients_per_round // slices)
    return self.runtime.split_context(slices)

  # -- building the computations --------------------------------------
  def _build(self, spec: BackendSpec) -> None:
    types = self._value_types()
    # Also what `_failing_clients` runs to find a client that raises.
    self._client_update = self._client_update_computation(types)
    self._slices = None
    if self._driver is not None:
      self._run_clients = self._clients_computation(types,
                                                    self._client_update)
      return
    self._server_state(types, spec.clients_per_round)
    if self._sums_suffice():
      self._slices = tff_slices.slice_shape(spec.clients_per_round,
                                            self._subrounds(spec))
      self._run_round = self._slice_sums_computation(types)
    else:
      self._run_round = self._round_computation(
          types, self._server_computations(types))

  def _subrounds(self, spec: BackendSpec) -> int:
    """How many calls a round's clients are split into (`subrounds`)."""
    return subrounds(spec.clients_per_round,
                     spec.tff_clients_per_call or DEFAULT_CLIENTS_PER_CALL,
                     self.runtime.num_workers)

  def _sums_suffice(self) -> bool:
    """Whether the round needs only the clients' weighted sums: the
    aggregator is the base example-weighted mean (its TFF form is
    `MeanFactory`) and no state stays on the clients (tff_slices.py)."""
    aggregator = self.algorithm.aggregator
    return (type(aggregator).tff_factory is Aggregator.tff_factory
            and aggregator.weighted and not self._has_state)

  def _value_types(self) -> _ValueTypes:
    """The TFF types of the model's weights, the algorithm's state and a
    client's batches; records which optional parts the algorithm has."""
    model = self.model_fn()
    trainable = [v.numpy() for v in model.trainable_variables]
    non_trainable = [v.numpy() for v in model.non_trainable_variables]
    extra = [t.numpy() for t in self.work.initial_server_extra(trainable)]
    state = [t.numpy() for t in self.work.initial_client_state(trainable)]
    self._has_nt, self._has_extra = bool(non_trainable), bool(extra)
    self._has_state = bool(state)
    t_spec = _specs(trainable)
    t_type, nt_type = _types(trainable), _types(non_trainable)
    extra_type, state_type = _types(extra), _types(state)
    matrix_type = tff.TensorType(np.int32, tuple(self.batch_shape))
    seed_type = tff.TensorType(np.int64, (2,))
    return _ValueTypes(t_spec, t_type, nt_type, extra_type, state_type,
                       matrix_type, seed_type)

  def _check_worker_data(self, x: np.ndarray, y: np.ndarray) -> None:
    """Every worker must map the driver's arrays: a fingerprint of its
    files against the driver's, once per run (UserError otherwise)."""
    data = self.data

    @tff.tensorflow.computation
    def worker_fingerprint():
      return tff_data.fingerprint(*tff_data.mapped_arrays(data))

    expected = tff_data.fingerprint(
        tf.constant(x, tf.float32), tf.constant(y, tf.int64)).numpy()
    for i, address in enumerate(self.runtime.addresses):
      try:
        found = self.runtime.run_on_worker(i, worker_fingerprint)
      except grpc.RpcError as e:
        raise UserError(
            f"TFF worker {address} cannot read this run's training data "
            f"{data.path('*')} ({error_summary(e.details())}); the driver "
            f"wrote it there on its own machine: copy those files to the "
            f"same path on the worker's, or name a shared directory with "
            f"--tff_data_dir") from None
      if not np.array_equal(np.asarray(found), expected):
        raise UserError(f"TFF worker {address} holds different training "
                        f"data under {data.path('*')} than the driver "
                        f"(fingerprint mismatch)")

  def _client_update_computation(self, types: _ValueTypes):
    """One client's local training, as a TFF TensorFlow computation."""
    work, model_fn, attack = self.work, self.model_fn, self.attack
    t_type, nt_type = types.trainable, types.non_trainable
    extra_type, state_type = types.extra, types.client_state
    data, flips = self.data, self.attack.on_labels
    num_classes = self.num_classes

    @tff.tensorflow.computation(t_type, nt_type, extra_type, types.matrix,
                                np.int32, np.float32, state_type,
                                types.seed, np.float32)
    def client_update(w, nt, ex, matrix, steps, num_examples, cstate, seed,
                      malicious):
      self.traces += 1
      x, y = tff_data.mapped_arrays(data)
      labels = flip_labels(y, malicious > 0, num_classes) if flips else y
      # Batches gathered by index in a while loop, as on the local backend:
      # a tf.data pipeline in a client's graph costs tens of milliseconds
      # per client call.
      batches = IndexedBatches(x, labels, matrix, steps)
      replica = model_fn()
      velocity = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False)
                  for v in replica.trainable_variables]

      @tf.function
      def train():
        out = work.train(replica, velocity, list(w), list(nt), batches,
                         num_examples, list(cstate), list(ex), seed)
        return vars(attack_output(out, malicious, seed, attack))

      out = train()
      return collections.OrderedDict(
          delta=out["delta"], non_trainable=out["non_trainable"],
          weight=out["weight"], extra_delta=out["extra_delta"],
          client_state=out["client_state"], dropped=out["dropped"],
          loss_sum=out["loss_sum"],
          correct=out["correct"], examples=out["examples"],
          steps=out["steps"],
          upload_bytes=tf.cast(out["upload_bytes"], tf.int64))

    return client_update

  def _clients_computation(self, types: _ValueTypes, client_update):
    """Broadcast and the clients' updates only, as a TFF federated
    computation returning every client's output to the driver."""

    @tff.federated_computation(
        _at_server(types.trainable), _at_server(types.non_trainable),
        _at_server(types.extra), _at_clients(types.matrix),
        _at_clients(np.int32), _at_clients(np.float32),
        _at_clients(types.client_state), _at_clients(types.seed),
        _at_clients(np.float32))
    def run_clients(w, nt, ex, matrices, steps, num_examples, cstates, seeds,
                    malicious):
      self.traces += 1
      return tff.federated_map(client_update, tff.federated_zip((
          tff.federated_broadcast(w), tff.federated_broadcast(nt),
          tff.federated_broadcast(ex), matrices, steps, num_examples,
          cstates, seeds, malicious)))

    return run_clients

  def _server_state(self, types: _ValueTypes, expected_clients: int) -> None:
    """What both round forms keep of the server: the aggregator, the
    optimizer and its initial state, the report's rows and dtypes."""
    t_spec = types.trainable_spec
    result_t = self._client_update.type_signature.result
    delta_t, weight_t = result_t.delta, result_t.weight
    self._report_dtypes = {key: np.dtype(getattr(result_t, key).dtype)
                           for key in REPORTED_NUMBERS}
    self._report_rows = expected_clients
    factory = self.algorithm.aggregator.tff_factory(expected_clients)
    self._aggregator = (factory.create(delta_t, weight_t)
                        if self.algorithm.aggregator.weighted else
                        factory.create(delta_t))
    optimizer = tff_server_optimizer(self.algorithm.server)
    self._optimizer = optimizer

    @tff.tensorflow.computation
    def initial_opt_state():
      return optimizer.initialize(t_spec)

    self._initial_opt_state = initial_opt_state

  def _server_computations(self, types: _ValueTypes) -> _ServerComputations:
    """The server update as TFF computations, for rounds with one TFF client
    per client (a slice round steps the server on the driver instead:
    `_server_step`)."""
    work, optimizer = self.work, self._optimizer
    t_type, extra_type = types.trainable, types.extra
    result_t = self._client_update.type_signature.result
    delta_t = result_t.delta
    num_clients = float(self.num_clients)
    opt_t = self._initial_opt_state.type_signature.result

    @tff.tensorflow.computation(opt_t, t_type, delta_t)
    def apply_optimizer(opt_state, w, mean_delta):
      new_state, new_w = optimizer.next(opt_state, list(w), list(mean_delta))
      return new_state, new_w

    @tff.tensorflow.computation(extra_type, result_t.extra_delta, np.float32)
    def update_extra(ex, mean_extra_delta, count):
      return work.update_server_extra(list(ex), list(mean_extra_delta),
                                      count / num_clients)

    return _ServerComputations(
        opt_t=opt_t, apply_optimizer=apply_optimizer,
        update_extra=update_extra,
        server_delta=self._server_delta_computation(types, result_t))

  def _round_computation(self, types: _ValueTypes,
                         server: _ServerComputations):
    """One round (broadcast, client updates, aggregation, server update) as
    a TFF federated computation, one TFF client per client."""
    client_update = self._client_update
    t_type, nt_type = types.trainable, types.non_trainable
    extra_type, state_type = types.extra, types.client_state
    result_t = client_update.type_signature.result
    aggregator, weighted = self._aggregator, self.algorithm.aggregator.weighted
    opt_t, apply_optimizer = server.opt_t, server.apply_optimizer
    update_extra, server_delta = server.update_extra, server.server_delta

    @tff.tensorflow.computation(np.float32)
    def kept(dropped):
      return 1.0 - dropped

    report_row, client_state_of = self._report_computations(
        result_t, self._report_rows)

    agg_state_t = aggregator.initialize.type_signature.result

    @tff.federated_computation(
        _at_server(t_type), _at_server(nt_type),
        _at_server(extra_type), _at_server(opt_t),
        agg_state_t, _at_clients(types.matrix), _at_clients(np.int32),
        _at_clients(np.float32), _at_clients(state_type),
        _at_clients(types.seed), _at_clients(np.float32),
        _at_clients(np.int32))
    def run_round(w, nt, ex, opt_state, agg_state, matrices, steps,
                  num_examples, cstates, seeds, malicious, slots):
      self.traces += 1
      outs = tff.federated_map(client_update, tff.federated_zip((
          tff.federated_broadcast(w), tff.federated_broadcast(nt),
          tff.federated_broadcast(ex), matrices, steps, num_examples,
          cstates, seeds, malicious)))
      if weighted:
        agg = aggregator.next(agg_state, outs.delta, outs.weight)
      else:
        agg = aggregator.next(agg_state, outs.delta)
      delta = agg.result
      if server_delta is not None:
        trained = tff.federated_map(kept, outs.dropped)
        mean_extra = tff.federated_mean(outs.extra_delta, trained)
        count = tff.federated_sum(trained)
        parts = ((delta, mean_extra, ex, count) if self._has_extra else
                 (delta, mean_extra, count))
        delta = tff.federated_map(server_delta, tff.federated_zip(parts))
      new_opt, new_w = tff.federated_map(
          apply_optimizer, tff.federated_zip((opt_state, w, delta)))
      new_nt = (tff.federated_mean(outs.non_trainable, outs.weight)
                if self._has_nt else nt)
      if self._has_extra:
        trained = tff.federated_map(kept, outs.dropped)
        new_ex = tff.federated_map(update_extra, tff.federated_zip((
            ex, tff.federated_mean(outs.extra_delta, trained),
            tff.federated_sum(trained))))
      else:
        new_ex = ex
      reports = tff.federated_sum(tff.federated_map(
          report_row, tff.federated_zip((outs, slots))))
      # Per-client state (SCAFFOLD's control variates, ...) can only come
      # back CLIENTS-placed; such rounds run unsplit (_split_context).
      states = (tff.federated_map(client_state_of, outs) if self._has_state
                else ())
      return (new_w, new_nt, new_ex, new_opt, agg.state, reports, states)

    return run_round

  def _slice_sums_computation(self, types: _ValueTypes):
    """The clients' part of a slice round as a TFF federated computation:
    broadcast, each slice's clients trained in one call (tff_slices.py),
    the federated sum of their weighted sums. Each worker runs it on its
    share of the slices; the driver adds the workers' sums and applies the
    server step (`_server_step`)."""
    result_t = self._client_update.type_signature.result
    training = tff_slices.SliceTraining(
        work=self.work, model_fn=self.model_fn, attack=self.attack,
        num_classes=self.num_classes,
        arrays=functools.partial(tff_data.mapped_arrays, self.data),
        reported=REPORTED_NUMBERS, has_nt=self._has_nt,
        extra_delta_specs=tuple((tuple(t.shape), tf.as_dtype(t.dtype))
                                for t in result_t.extra_delta))
    train_slice = tff_slices.slice_training_computation(
        training, types, self._slices, self._count_trace)
    slice_args = train_slice.type_signature.parameter

    @tff.federated_computation(
        _at_server(types.trainable), _at_server(types.non_trainable),
        _at_server(types.extra),
        *[_at_clients(slice_args[i]) for i in range(3, len(slice_args))])
    def train_slices(w, nt, ex, matrices, steps, num_examples, seeds,
                     malicious, slots):
      self.traces += 1
      return tff.federated_sum(tff.federated_map(train_slice,
          tff.federated_zip((
              tff.federated_broadcast(w), tff.federated_broadcast(nt),
              tff.federated_broadcast(ex), matrices, steps, num_examples,
              seeds, malicious, slots))))

    return train_slices

  def _server_step(self, state: ServerState, sums) -> ServerState:
    """The server's part of a slice round, on the driver (the server):
    MeanFactory's arithmetic (sum of w_i * x_i over sum of w_i), the
    algorithm's server delta and extra state, and the same tff.learning
    optimizer the one-client-per-client round applies inside TFF."""
    work, count_share = self.work, None
    weight = tf.constant(sums["weight"], tf.float32)
    delta = [tf.constant(d) / weight for d in sums["delta"]]
    non_trainable = ([tf.constant(v) / weight for v in sums["non_trainable"]]
                     if self._has_nt else state.non_trainable)
    extra = [tf.constant(e) for e in state.extra]
    if "extra_delta" in sums:
      kept = tf.constant(sums["kept"], tf.float32)
      mean_extra = [tf.constant(d) / kept for d in sums["extra_delta"]]
      count_share = kept / float(self.num_clients)
      delta = work.server_delta(delta, mean_extra, extra, count_share)
    opt_state, trainable = self._optimizer.next(
        state.optimizer["optimizer"],
        [tf.constant(w) for w in state.trainable], delta)
    if self._has_extra:
      extra = work.update_server_extra(extra, mean_extra, count_share)
    return dataclasses.replace(
        state, trainable=[np.asarray(w) for w in trainable],
        non_trainable=[np.asarray(v) for v in non_trainable],
        optimizer={"optimizer": _to_numpy(opt_state),
                   "aggregator": state.optimizer["aggregator"]},
        extra=[np.asarray(e) for e in extra])

  def _count_trace(self) -> None:
    self.traces += 1

  @staticmethod
  def _report_computations(result_t, rows: int):
    """(report_row, client_state_of): a client's numbers as its row of the
    round's summed report matrix, and its new state."""

    @tff.tensorflow.computation(result_t, np.int32)
    def report_row(out, slot):
      # The client's numbers in row `slot` of a matrix that is zero
      # elsewhere: summed at the server these rows are every client's
      # report (exactly: each sum adds zeros to one value). A CLIENTS-placed
      # result instead would make TFF's split (mergeable) form rerun the
      # clients' training after the merge, once per worker and subround.
      onehot = tf.one_hot(slot, rows, dtype=tf.float64)
      values = tf.stack([tf.cast(out[key], tf.float64)
                         for key in REPORTED_NUMBERS])
      return collections.OrderedDict(
          numbers=onehot[:, None] * values[None, :],
          upload_bytes=tf.cast(onehot, tf.int64) * out["upload_bytes"])

    @tff.tensorflow.computation(result_t)
    def client_state_of(out):
      return out["client_state"]

    return report_row, client_state_of

  def _server_delta_computation(self, types: _ValueTypes, result_t):
    """`ClientWork.server_delta` as a TFF computation (None when the clients
    report no extra deltas: then it is not called, as on `local`)."""
    if not len(result_t.extra_delta):  # pylint: disable=g-explicit-length-test
      return None
    work, num_clients = self.work, float(self.num_clients)
    delta_t, extra_delta_t = result_t.delta, result_t.extra_delta
    if self._has_extra:
      @tff.tensorflow.computation(delta_t, extra_delta_t, types.extra,
                                  np.float32)
      def with_extra(mean_delta, mean_extra, ex, count):
        return work.server_delta(list(mean_delta), list(mean_extra),
                                 list(ex), count / num_clients)
      return with_extra

    @tff.tensorflow.computation(delta_t, extra_delta_t, np.float32)
    def without_extra(mean_delta, mean_extra, count):
      return work.server_delta(list(mean_delta), list(mean_extra), [],
                               count / num_clients)
    return without_extra

  # -- the backend interface ------------------------------------------------
  def _check_open(self) -> None:
    # After close() TFF's own default context is back, and a computation
    # run there would start a worker nobody stops.
    if self.runtime is None:
      raise RuntimeError("this TffBackend is closed")

  def initial_state(self, model: tf.keras.Model) -> ServerState:
    self._check_open()
    if self._driver is not None:
      return self._driver.initial_state(model)
    trainable = [v.numpy() for v in model.trainable_variables]
    return ServerState(
        trainable=trainable,
        non_trainable=[v.numpy() for v in model.non_trainable_variables],
        optimizer={"optimizer": _to_numpy(self._initial_opt_state()),
                   "aggregator": _to_numpy(self._aggregator.initialize())},
        extra=[t.numpy() for t in self.work.initial_server_extra(trainable)])

  def run_round(self, state: ServerState, tasks, client_states, round_num
                ) -> Tuple[ServerState, List[ClientOutput]]:
    self._check_open()
    traffic = self.runtime.traffic
    before = dataclasses.replace(traffic)
    try:
      return self._train_round(state, tasks, client_states, round_num)
    finally:
      self._round_traffic = {
          "bytes/sent_to_workers": traffic.sent - before.sent,
          "bytes/received_from_workers": traffic.received - before.received,
          # Of the sent bytes: the round's computation itself.
          "bytes/computations_to_workers":
              traffic.computations_sent - before.computations_sent}

  def _train_round(self, state: ServerState, tasks, client_states, round_num
                   ) -> Tuple[ServerState, List[ClientOutput]]:
    blank = [t.numpy() for t in self.work.initial_client_state(
        state.trainable)]
    # Per client: (index matrix, steps, examples, client state, seed,
    # malicious).
    inputs = [(np.asarray(t.matrix, np.int32), np.int32(t.steps),
               np.float32(t.examples), client_states.get(t.client_id, blank),
               t.seed, np.float32(t.malicious))
              for t in (ClientTask(*task) for task in tasks)]
    try:
      return self._round(state, inputs, round_num)
    except grpc.RpcError as e:
      failing = self._failing_clients(state, tasks, inputs, round_num, e)
    kept = [i for i in range(len(tasks)) if i not in failing]
    if kept:
      new_state, kept_outputs = self._round(state, [inputs[i] for i in kept],
                                            round_num)
    else:
      new_state = dataclasses.replace(state, round_num=round_num)
      kept_outputs = []
    outputs = dict(zip(kept, kept_outputs))
    for i in failing:
      outputs[i] = failed_output(state.trainable, state.non_trainable,
                                 state.extra, inputs[i][3])
    return new_state, with_reported_shapes(
        [outputs[i] for i in range(len(tasks))])

  def round_metrics(self) -> dict:
    """The last `run_round`'s gRPC payload bytes to and from the workers
    (tff_context.WireTraffic), for the round's metrics row."""
    return dict(self._round_traffic)

  def _failing_clients(self, state: ServerState, tasks, inputs,
                       round_num: int, error: grpc.RpcError) -> List[int]:
    """Indices of the clients whose update alone raises; re-raises `error`
    when it was not a client's (no client fails alone)."""
    if error.code() != grpc.StatusCode.INTERNAL:
      raise error
    failing = []
    for i, client_input in enumerate(inputs):
      try:
        self._client_update(state.trainable, state.non_trainable,
                            state.extra, *client_input)
      except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.INTERNAL:
          raise
        logging.warning(
            "round %d: local training of client %d raised on the TFF "
            "worker (%s); the client is dropped from the round", round_num,
            tasks[i][0], error_summary(e.details()))
        failing.append(i)
    if not failing:
      raise error
    return failing

  def _round(self, state: ServerState, inputs, round_num: int
             ) -> Tuple[ServerState, List[ClientOutput]]:
    clients = [list(x) for x in zip(*inputs)]
    examples = clients[2]
    if self._driver is not None:
      return self._driver_round(state, clients, round_num)
    if len(examples) > self._report_rows:
      raise ValueError(f"{len(examples)} clients in a round built for at "
                       f"most {self._report_rows}")
    if self._slices is not None:
      new_state, reports, states = self._slice_round(state, clients)
    else:
      slots = list(np.arange(len(examples), dtype=np.int32))
      with (contextlib.nullcontext() if self._split is None else
            context_stack_impl.context_stack.install(self._split)):
        w, nt, ex, opt, agg, reports, states = self._run_round(
            state.trainable, state.non_trainable, state.extra,
            state.optimizer["optimizer"], state.optimizer["aggregator"],
            *clients, slots)
      new_state = ServerState(
          trainable=[np.asarray(a) for a in w],
          non_trainable=[np.asarray(a) for a in nt],
          optimizer={"optimizer": _to_numpy(opt),
                     "aggregator": _to_numpy(agg)},
          extra=[np.asarray(a) for a in ex])
    new_state = dataclasses.replace(new_state, round_num=round_num)
    numbers = np.asarray(reports["numbers"])
    upload = np.asarray(reports["upload_bytes"])
    dtypes = self._report_dtypes
    outputs = [
        ClientOutput(delta=[], non_trainable=[], weight=np.float32(n),
                     extra_delta=[],
                     client_state=([np.asarray(a) for a in states[i]]
                                   if self._has_state else []),
                     upload_bytes=np.int64(upload[i]),
                     **{key: dtypes[key].type(numbers[i, j])
                        for j, key in enumerate(REPORTED_NUMBERS)})
        for i, n in enumerate(examples)
    ]
    return new_state, outputs

  def _slice_round(self, state: ServerState, clients):
    """(new state, report sums, no client states) of a slice round: each
    worker trains its share of the slices at once, the driver adds their
    sums and applies the server step."""
    # Without the clients' states (a slice round's clients keep none).
    slices = tff_slices.pack_slices(clients[:3] + clients[4:], self._slices,
                                    self.batch_shape)
    workers = self.runtime.num_workers
    share = self._slices.num_slices // workers
    args_by_worker = {}
    for i in range(workers):
      columns = [column[i * share:(i + 1) * share] for column in slices]
      # A worker whose share is only padding (fewer clients than workers)
      # is not sent the weights.
      if any((slots >= 0).any() for slots in columns[-1]):
        args_by_worker[i] = (state.trainable, state.non_trainable,
                             state.extra, *columns)
    sums = [_to_numpy(s) for s in
            self.runtime.run_on_workers(self._run_round, args_by_worker)]
    total = tf.nest.map_structure(lambda first, *rest: sum(rest, first),
                                  *sums)
    return self._server_step(state, total), total, ()

  def _driver_round(self, state: ServerState, clients, round_num: int
                    ) -> Tuple[ServerState, List[ClientOutput]]:
    """The clients on TFF (`clients`: the per-client input lists), their
    aggregation on the driver."""
    outs = self._run_clients(state.trainable, state.non_trainable,
                             state.extra, *clients)
    outputs = [ClientOutput(**{
        key: ([np.asarray(a) for a in value] if isinstance(value, list)
              else value) for key, value in _as_dict(out).items()})
               for out in outs]
    return self._driver.aggregate(state, outputs, round_num), outputs


def _as_dict(out) -> dict:
  """A client's output as TFF returns it (an OrderedDict or a structure)
  with list-valued fields as lists."""
  out = dict(out.items()) if hasattr(out, "items") else dict(out)
  return {key: list(value) if isinstance(value, (list, tuple)) else value
          for key, value in out.items()}


def _to_numpy(structure):
  return tf.nest.map_structure(np.asarray, structure)
