"""Batched clients: K clients' local SGD steps as one computation.

The `local` backend's replica mode trains each client in its own model
replica; with the small batches of federated papers (B=10) every kernel is
too small to fill the cores. Here the K clients of a group keep their
weights stacked on a client axis ([K, ...] per variable) and each local
step is one forward and backward pass of all K clients' batches through
`fedclf.models.stacked` (batched matmuls, grouped convolutions).

Clients with fewer local steps than the group's longest (quantity skew,
stragglers) stop at their last step, as in the replica mode's shorter
loop: the local backend groups clients in descending order of steps, so a
step's active clients are the first n and only their rows are computed
and updated (a round costs its clients' steps, not K times the longest's);
a group in any other order computes every client and masks the finished
ones (`tf.where`, so not even a NaN of theirs leaks). The
clients' outputs come from the work's own `LocalSGD.output`, so SCAFFOLD's
control variates, FedNova's normalization and the NaN/Inf drop are the
same code in both modes.

Supported: client works whose local step is `LocalSGD`'s (FedAvg, FedSGD,
FedAvgM/FedAdam/FedYogi, FedProx, SCAFFOLD, FedNova, DP-FedAvg: its
clipping is the aggregator's) with the supervised objective, on models that
`stacked.plan_for` plans. Anything else trains in replicas;
`unsupported_reason` says why.
"""

from __future__ import annotations

from typing import List, Optional

import tensorflow as tf

from fedclf.federated.attacks import attack_output
from fedclf.federated.attacks import flip_labels
from fedclf.federated.backends.protocol import BackendSpec
from fedclf.federated.client_work import ClientOutput
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.client_work import masked_loss_and_correct
from fedclf.models import stacked

# Stacked floats per weight copy (weights, gradients, momentum and the
# deltas each hold one): 2^25 floats = 128 MiB, 20 McMahan-CNN clients.
MAX_STACKED_FLOATS = 2**25

# Per-step methods of LocalSGD that the batched step reimplements on the
# stacked weights: a work that overrides one of them runs in replicas.
_STEP_METHODS = ("train", "decayed", "apply_update", "after_step")


def unsupported_reason(spec: BackendSpec,
                       model: tf.keras.Model) -> Optional[str]:
  """Why the spec's clients cannot train batched (None: they can)."""
  work = spec.algorithm.client_work
  if not isinstance(work, LocalSGD) or any(
      getattr(type(work), m) is not getattr(LocalSGD, m)
      for m in _STEP_METHODS):
    return (f"client work {type(work).__name__} has its own local step "
            "(only LocalSGD's step is batched)")
  if work.objective is not masked_loss_and_correct:
    return "the client objective is not the supervised cross-entropy"
  try:
    plan = stacked.plan_for(model)
  except stacked.Unbatchable as e:
    return f"model {model.name}: {e}"
  if any(op.kind == "conv" for op in plan):
    missing = stacked.grouped_conv_gradient_error()
    if missing is not None:
      return f"model {model.name} has convolutions and {missing}"
  return None


# Per-client weights above which `auto` leaves a model in replicas. At B=10
# every local step reads each client's weights twice and writes its
# gradient and update once, and the gradient of a dense layer is a rank-B
# product: for a big dense layer (the McMahan CNN's 3136 x 512) those
# passes cost the same in both modes and dominate the step, so the bigger
# kernels buy nothing (measured: BUILD_NOTES.md, "Batched clients").
AUTO_MAX_WEIGHTS = 2**20


def auto_declines(model: tf.keras.Model) -> Optional[str]:
  """Why `--client_batching=auto` leaves a model it could batch in replicas
  (None: it batches it). Measured at round level on the 2-core CPU
  (BUILD_NOTES.md, "Batched clients"): LeNet-5 (62k weights) ran 1.9x
  faster batched at B=10, the 2NN (199k) as fast, the McMahan CNN (1.66M)
  slower; `on` batches every plannable model."""
  weights = sum(int(v.shape.num_elements())
                for v in model.trainable_variables)
  if weights > AUTO_MAX_WEIGHTS:
    return (f"model {model.name} has {weights:,} weights per client, above "
            f"the {AUTO_MAX_WEIGHTS:,} where batched clients measured no "
            "faster than replicas on CPU (--client_batching=on forces it)")
  return None


def group_size(spec: BackendSpec, model: tf.keras.Model) -> int:
  """Clients per batched computation: the round's, within the memory cap."""
  params = sum(int(v.shape.num_elements()) for v in model.trainable_variables)
  return max(1, min(spec.clients_per_round, MAX_STACKED_FLOATS // params))


def _rows(t, n) -> tf.Tensor:
  """The first `n` rows of `t` (a tensor or variable), its other dims
  static."""
  rows = tf.slice(t, [0] * len(t.shape), [n] + [-1] * (len(t.shape) - 1))
  return tf.ensure_shape(rows, [None, *t.shape[1:]])


def _client_axis(mask: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
  """[K] `mask` reshaped to broadcast over `like` [K, ...]."""
  return tf.reshape(mask, [-1] + [1] * (len(like.shape) - 1))


class BatchedClients:
  """Trains groups of clients on stacked weights (call `train` inside
  tf.function)."""

  def __init__(self, spec: BackendSpec, model: tf.keras.Model, x, y):
    """`x` and `y`: the training images and int64 labels (variables the
    backend holds)."""
    self.work = spec.algorithm.client_work
    self.plan = stacked.plan_for(model)
    self.attack = spec.attack
    self.num_classes = spec.num_classes
    self.x, self.y = x, y
    self.group = group_size(spec, model)
    # The group's stacked weights and momentum buffers, updated in place:
    # new [K, ...] tensors every step would cost an allocation (and the
    # page faults of a fresh buffer) per weight and step.
    self.weights = [
        tf.Variable(tf.zeros([self.group, *v.shape], v.dtype),
                    trainable=False) for v in model.trainable_variables]
    self.velocity = ([tf.Variable(tf.zeros_like(w), trainable=False)
                      for w in self.weights] if self.work.momentum else [])

  def _batch(self, matrices, i, malicious):
    """Step `i`'s images [K, B, ...], labels and mask of every client."""
    rows = matrices[:, i]
    valid = rows >= 0
    safe = tf.where(valid, rows, 0)
    # Padding is a zero image: a real one (even masked) could carry a NaN
    # into the gradient, as in IndexedBatches.get.
    images = tf.gather(self.x, safe)
    images = tf.where(tf.reshape(valid, tf.concat(
        [tf.shape(valid), [1] * (len(images.shape) - 2)], 0)), images, 0.0)
    labels = tf.gather(self.y, safe)
    if self.attack.on_labels:
      labels = flip_labels(labels, malicious[:, tf.newaxis], self.num_classes)
    return images, labels, tf.cast(valid, tf.float32)

  def _loss(self, weights, global_trainable, images, labels, mask):
    """Per-client mean loss [K], correct counts and example counts, and the
    objective whose gradient is every client's own (the sum)."""
    logits = stacked.forward(self.plan, weights, images)
    per_example = tf.keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True)
    count = tf.reduce_sum(mask, 1)
    loss = tf.reduce_sum(per_example * mask, 1) / tf.maximum(count, 1.0)
    hits = tf.cast(tf.equal(tf.argmax(logits, -1), labels), tf.float32)
    objective = tf.reduce_sum(loss)
    if self.work.prox_mu > 0:
      objective += 0.5 * self.work.prox_mu * tf.add_n([
          tf.reduce_sum(tf.square(w - g))
          for w, g in zip(weights, global_trainable)])
    return objective, loss, tf.reduce_sum(hits * mask, 1), count

  def _update(self, grads, active):
    """One (momentum) SGD step of the clients that are `active` ([K]
    bool); the others keep their weights and momentum. The mask costs a
    broadcast select per weight (slow on CPU), so a step where every
    client is active (most of them, the groups being formed by step count)
    updates in place without it."""
    if tf.reduce_all(active):
      self._fused_update(grads)
    else:
      self._masked_update(grads, active)

  def _masked_update(self, grads, active):
    """v = m * v + g; w -= lr * v for the active clients only."""
    lr, momentum = self.work.lr, self.work.momentum
    for i, (w, g) in enumerate(zip(self.weights, grads)):
      def kept(new, old):
        return tf.where(_client_axis(active, old), new, old)
      if momentum:
        v = self.velocity[i]
        g = kept(momentum * v + g, v)
        v.assign(g)
      w.assign(kept(w - lr * g, w))

  def _prefix_update(self, grads, n):
    """v = m * v + g; w -= lr * v for the first `n` clients (`grads` holds
    only theirs), in place on those rows; the others keep theirs."""
    lr, momentum = self.work.lr, self.work.momentum
    for i, (w, g) in enumerate(zip(self.weights, grads)):
      if momentum:
        v = self.velocity[i]
        g = momentum * _rows(v, n) + g
        v[:n].assign(g)
      w[:n].assign(_rows(w, n) - lr * g)

  def _fused_update(self, grads):
    """The same rule for every client, as TensorFlow's fused in-place
    kernels: one pass over each stacked weight (and momentum buffer)
    instead of the temporaries of `w - lr * g`, which for the McMahan CNN's
    10 x 1.6M weights took 12.5 ms a step against 5.3 ms fused."""
    lr, momentum = self.work.lr, self.work.momentum
    for i, (w, g) in enumerate(zip(self.weights, grads)):
      rate = tf.cast(lr, w.dtype)
      if momentum:
        tf.raw_ops.ResourceApplyMomentum(
            var=w.handle, accum=self.velocity[i].handle, lr=rate, grad=g,
            momentum=tf.cast(momentum, w.dtype))
      else:
        tf.raw_ops.ResourceApplyGradientDescent(var=w.handle, alpha=rate,
                                                delta=g)

  def _gradients(self, weights, global_trainable, corrections, images,
                 labels, mask):
    """The clients' gradients under `weights` (with `corrections`), and
    their mean losses, correct counts and example counts."""
    with tf.GradientTape() as tape:
      tape.watch(weights)
      objective, loss, hits, count = self._loss(
          weights, global_trainable, images, labels, mask)
    grads = self.work.decayed(tape.gradient(objective, weights), weights)
    if corrections:
      grads = [g + c for g, c in zip(grads, corrections)]
    return grads, (loss, hits, count)

  def _every_client_step(self, i, active, global_trainable, corrections,
                         matrices, malicious):
    """Step `i` computed for all K clients, the inactive ones masked."""
    images, labels, mask = self._batch(matrices, i, malicious)
    grads, stats = self._gradients(self.weights, global_trainable,
                                   corrections, images, labels, mask)
    self._update(grads, active)
    return stats

  def _first_clients_step(self, i, n, global_trainable, corrections,
                          matrices, malicious):
    """Step `i` computed for the first `n` clients only (the active ones,
    the clients being in descending order of steps); the [K] statistics
    are zero past them."""
    images, labels, mask = self._batch(_rows(matrices, n), i,
                                       _rows(malicious, n))
    grads, stats = self._gradients(
        [_rows(w, n) for w in self.weights], global_trainable,
        [_rows(c, n) for c in corrections], images, labels, mask)
    self._prefix_update(grads, n)
    return [tf.pad(t, [[0, self.group - n]]) for t in stats]

  def _step(self, i, totals, global_trainable, corrections, batch_args):
    """Local step `i` of every client whose `steps` exceed it. With the
    clients in descending order of steps (as the local backend groups
    them) those are the first n, and once n < K only they are computed:
    a group of unequal clients (quantity skew: 10 to 1,930 steps in one
    round) then costs its clients' steps, not K times its longest's. The
    two cases are separate branches (a shared graph let Grappler's
    constant folding unify n with K and fold the wrong shape)."""
    matrices, steps, malicious, descending = batch_args
    active = i < steps
    n = tf.reduce_sum(tf.cast(active, tf.int32))
    if descending and n < self.group:
      loss, hits, count = self._first_clients_step(
          i, n, global_trainable, corrections, matrices, malicious)
    else:
      loss, hits, count = self._every_client_step(
          i, active, global_trainable, corrections, matrices, malicious)
    on = tf.cast(active, tf.float32)
    loss_sum, correct, examples = totals
    return (loss_sum + tf.where(active, loss * count, 0.0),
            correct + on * hits, examples + on * count)

  def train(self, trainable, non_trainable, extra, matrices, steps,
            examples, client_states, seeds, malicious) -> List[ClientOutput]:
    """The K clients' outputs, as `LocalBackend._train_slots` returns them
    (the same arguments, with K = the rows of `matrices` = `group`)."""
    k = self.group
    for w, value in zip(self.weights, trainable):
      w.assign(tf.repeat(value[tf.newaxis], k, 0))
    for v in self.velocity:
      v.assign(tf.zeros_like(v))
    per_client = [self.work.gradient_correction(s, extra)
                  for s in client_states]
    corrections = [tf.stack(c) for c in zip(*per_client)]
    zeros = tf.zeros([k])
    totals = (zeros, zeros, zeros)
    # Steps in descending order: each step's active clients are a prefix.
    descending = tf.reduce_all(steps[:-1] >= steps[1:])
    for i in tf.range(tf.reduce_max(steps)):
      totals = self._step(i, totals, trainable, corrections,
                          (matrices, steps, malicious, descending))
    return self._outputs(totals, trainable, non_trainable, extra, steps,
                         examples, client_states, seeds, malicious)

  def _outputs(self, totals, trainable, non_trainable, extra, steps,
               examples, client_states, seeds, malicious
               ) -> List[ClientOutput]:
    loss_sum, correct, counted = totals
    outputs = []
    for c in range(len(client_states)):
      out = self.work.output(
          trainable, non_trainable, [tf.identity(w[c]) for w in self.weights],
          [], (loss_sum[c], correct[c], counted[c], steps[c]), examples[c],
          client_states[c], extra)
      outputs.append(attack_output(out, malicious[c], seeds[c], self.attack))
    return outputs
