"""Rounds whose TFF clients are slices of fedclf's clients (weighted mean).

With one TFF client per fedclf client, TFF's C++ worker materializes every
client of a call at once (its copy of the broadcast weights, its update, its
weighted update: ~25 MB each for the McMahan CNN) and pays a session run per
client. When the round only needs the clients' example-weighted mean
(fedclf's default `Aggregator`, whose TFF form is `MeanFactory`), a worker
does not have to keep the updates apart: each TFF client here is a *slice*
of k fedclf clients that one `tff.tensorflow.computation` trains one after
another in a while loop, reusing one model replica, and returns only their
sums (sum of w_i * delta_i and of w_i, the same for the non-trainable
weights, the extra deltas and the report rows). Each worker returns the
`federated_sum` of its share of the slices; the driver, which is the
server, adds the workers' sums, divides (MeanFactory's arithmetic) and
applies the server optimizer (`TffBackend._server_step`), so the round is
the same function of its inputs (up to float summation order).

A worker then holds one model replica per concurrent call instead of
several model copies per client, and the wire carries the weights once per
worker down and one sum per worker up (TFF's mergeable form, which the
one-client-per-client rounds use over several workers, also ships the
partial aggregates to a worker to merge them and the state back and forth
for the server update: 2.5x those bytes with two workers, measured).

Rounds that need each client's update apart (DP, robust aggregators, state
kept on the clients, the driver-aggregated path) keep one TFF client per
fedclf client (tff.py).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, List

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedclf.federated.attacks import AttackConfig
from fedclf.federated.attacks import attack_output
from fedclf.federated.attacks import flip_labels
from fedclf.federated.client_work import IndexedBatches


@dataclasses.dataclass(frozen=True)
class SliceShape:
  """How a round's clients are laid out as TFF clients."""
  slice_size: int  # fedclf clients per TFF client (k)
  num_slices: int  # TFF clients per round
  report_rows: int  # rows of the report matrix (clients per round)


def slice_shape(clients_per_round: int, num_slices: int) -> SliceShape:
  return SliceShape(slice_size=-(-clients_per_round // num_slices),
                    num_slices=num_slices, report_rows=clients_per_round)


@dataclasses.dataclass(frozen=True)
class SliceTraining:
  """What a slice's computation trains with (all fixed per run)."""
  work: object  # the algorithm's ClientWork (stateless on the clients)
  model_fn: Callable[[], tf.keras.Model]
  attack: AttackConfig
  num_classes: int
  # () -> (x, y): the training arrays as the worker maps them.
  arrays: Callable[[], tuple]
  reported: tuple  # the client numbers of a report row, in column order
  has_nt: bool
  # The extra deltas' (shape, dtype)s (SCAFFOLD-like works; none: empty).
  extra_delta_specs: tuple


def pack_slices(clients: List[list], shape: SliceShape, matrix_shape
                ) -> List[list]:
  """The per-client input lists (matrices, steps, examples, seeds,
  malicious) as per-slice stacks, plus each client's report slot; client i
  goes to slice i mod num_slices (so big and small clients spread), and the
  free places hold padding clients (slot -1, no steps, no examples)."""
  matrices, steps, examples, seeds, malicious = clients
  n, k, s = len(examples), shape.slice_size, shape.num_slices
  if n > k * s:
    raise ValueError(f"{n} clients in a round built for at most {k * s}")
  padding = (np.full(matrix_shape, -1, np.int32), np.int32(0),
             np.float32(0.0), np.zeros(2, np.int64), np.float32(0.0),
             np.int32(-1))
  columns = [[[] for _ in range(s)] for _ in range(6)]
  for client in range(k * s):
    j = client % s
    if client < n:
      values = (matrices[client], steps[client], examples[client],
                seeds[client], malicious[client], np.int32(client))
    else:
      values = padding
    for column, value in zip(columns, values):
      column[j].append(value)
  dtypes = (np.int32, np.int32, np.float32, np.int64, np.float32, np.int32)
  return [[np.asarray(per_slice, dtype) for per_slice in column]
          for column, dtype in zip(columns, dtypes)]


def slice_training_computation(training: SliceTraining, types, shape:
                               SliceShape, traced: Callable[[], None]):
  """A slice's k clients trained one after another as one TFF TensorFlow
  computation; returns their sums (see the module docstring)."""
  k, rows = shape.slice_size, shape.report_rows
  work, model_fn, attack = training.work, training.model_fn, training.attack
  reported, num_classes = training.reported, training.num_classes
  flips = attack.on_labels
  matrices_t = tff.TensorType(np.int32, (k,) + tuple(types.matrix.shape))

  @tff.tensorflow.computation(
      types.trainable, types.non_trainable, types.extra, matrices_t,
      tff.TensorType(np.int32, (k,)), tff.TensorType(np.float32, (k,)),
      tff.TensorType(np.int64, (k, 2)), tff.TensorType(np.float32, (k,)),
      tff.TensorType(np.int32, (k,)))
  def train_slice(w, nt, ex, matrices, steps, num_examples, seeds,
                  malicious, slots):
    traced()
    x, y = training.arrays()
    replica = model_fn()
    velocity = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False)
                for v in replica.trainable_variables]
    w, nt, ex = list(w), list(nt), list(ex)

    @tf.function
    def train_all():
      sums = _zero_sums(w, nt, training, rows)
      for i in tf.range(k):
        labels = (flip_labels(y, malicious[i] > 0, num_classes) if flips
                  else y)
        batches = IndexedBatches(x, labels, matrices[i], steps[i])
        out = work.train(replica, velocity, w, nt, batches, num_examples[i],
                         [], ex, seeds[i])
        out = attack_output(out, malicious[i], seeds[i], attack)
        sums = _add_client(sums, out, slots[i], training, rows)
      return sums

    return train_all()

  return train_slice


def _zero_sums(w, nt, training: SliceTraining, rows: int):
  sums = collections.OrderedDict(
      delta=[tf.zeros_like(t) for t in w], weight=tf.constant(0.0),
      numbers=tf.zeros([rows, len(training.reported)], tf.float64),
      upload_bytes=tf.zeros([rows], tf.int64))
  if training.has_nt:
    sums["non_trainable"] = [tf.zeros_like(t) for t in nt]
  if training.extra_delta_specs:
    sums["extra_delta"] = [tf.zeros(shape, dtype) for shape, dtype in
                           training.extra_delta_specs]
    sums["kept"] = tf.constant(0.0)
  return sums


def _add_client(sums, out, slot, training: SliceTraining, rows: int):
  """`sums` plus one client's output; a padding client (slot -1) adds
  zeros (its one-hot row is zero and its weight is 0)."""
  real = tf.cast(slot >= 0, tf.float32)
  weight = out.weight * real
  new = collections.OrderedDict(
      delta=[s + weight * d for s, d in zip(sums["delta"], out.delta)],
      weight=sums["weight"] + weight)
  # The client's numbers in row `slot` of a matrix zero elsewhere, as on
  # the one-client-per-TFF-client path (tff.py, report_row).
  onehot = tf.one_hot(slot, rows, dtype=tf.float64)
  values = tf.stack([tf.cast(getattr(out, key), tf.float64)
                     for key in training.reported])
  new["numbers"] = sums["numbers"] + onehot[:, None] * values[None, :]
  new["upload_bytes"] = sums["upload_bytes"] + tf.cast(
      onehot, tf.int64) * tf.cast(out.upload_bytes, tf.int64)
  if training.has_nt:
    new["non_trainable"] = [s + weight * v for s, v in
                            zip(sums["non_trainable"], out.non_trainable)]
  if training.extra_delta_specs:
    kept = (1.0 - tf.cast(out.dropped, tf.float32)) * real
    new["extra_delta"] = [s + kept * d for s, d in
                          zip(sums["extra_delta"], out.extra_delta)]
    new["kept"] = sums["kept"] + kept
  return new
