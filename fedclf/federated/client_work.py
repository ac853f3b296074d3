"""Client work: what one client does with the broadcast model in a round.

Each algorithm's client side is a `ClientWork`: pure TensorFlow over a
dataset of (images, labels, mask) batches, so the same code runs inside the
`local` backend's tf.function and inside a `tff.tf_computation` on TFF's
runtime. The mask marks padding (0) in the last, short batch so every batch
has a static shape and padding never contributes to a gradient.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable, List, Protocol, Sequence

import numpy as np
import tensorflow as tf

from fedclf.federated.communication import dense_bytes
from fedclf.federated.config import AlgorithmConfig

Tensors = List[tf.Tensor]


@dataclasses.dataclass
class ClientOutput:
  """What a client reports (all tensors)."""
  delta: Tensors  # broadcast trainable weights minus local ones
  non_trainable: Tensors  # local values (e.g. BatchNorm statistics)
  weight: tf.Tensor  # aggregation weight: the client's example count
  extra_delta: Tensors  # algorithm-specific (SCAFFOLD: control variate step)
  client_state: Tensors  # the client's new persistent state ([] if none)
  dropped: tf.Tensor  # 1.0 if the client's training became non-finite
  loss_sum: tf.Tensor
  correct: tf.Tensor
  examples: tf.Tensor  # examples processed (epochs x dataset size)
  steps: tf.Tensor
  # 1.0 if the client's local training raised (then `dropped` is 1.0 too);
  # set by the backend, never by the client work.
  failed: tf.Tensor = 0.0
  # Bytes the client uploads this round. None (the default) counts dense
  # float32: 4 bytes per entry of `delta`, `non_trainable` (the server
  # averages them) and `extra_delta` (SCAFFOLD's control-variate step);
  # `client_state` stays on the client. A compressing client work
  # (compression.py) sets its encoded size.
  upload_bytes: tf.Tensor = None

  def __post_init__(self):
    if self.upload_bytes is None:
      self.upload_bytes = np.int64(dense_bytes(
          list(self.delta) + list(self.non_trainable) +
          list(self.extra_delta)))


def failed_output(trainable: Sequence, non_trainable: Sequence,
                  extra: Sequence, client_state: Sequence) -> ClientOutput:
  """What a client whose local training raised reports: a zero update with
  zero weight and its state unchanged, marked dropped and failed. Arrays
  shaped like the server's weights and extra state (SCAFFOLD's control
  variate has the weights' shapes)."""
  zero = np.float32(0.0)
  return ClientOutput(
      delta=[np.zeros_like(w) for w in trainable],
      non_trainable=list(non_trainable), weight=zero,
      extra_delta=[np.zeros_like(e) for e in extra],
      client_state=list(client_state), dropped=np.float32(1.0),
      loss_sum=zero, correct=zero, examples=zero, steps=np.int32(0),
      failed=np.float32(1.0))


def with_reported_shapes(outputs: Sequence[ClientOutput]
                         ) -> List[ClientOutput]:
  """`outputs` with each failed client's extra deltas replaced by zeros
  shaped like those a client that trained reported. `failed_output` shapes
  them like the server's extra state, which is not what every algorithm
  reports (FedNova: two scalars per client, no server state); an
  aggregator that stacks every output (median, Krum) needs them alike."""
  reference = next((o for o in outputs if not o.failed), None)
  if reference is None:
    return list(outputs)
  return [dataclasses.replace(o, extra_delta=[
      np.zeros(np.shape(e), np.asarray(e).dtype)
      for e in reference.extra_delta]) if o.failed else o for o in outputs]


def error_summary(message: str) -> str:
  """The failing op's own message out of a TensorFlow/TFF error text (after
  'Graph execution error:' TF lists where the node was defined, indented,
  and the node names follow the message, indented)."""
  lines = [line for line in (message or "").splitlines()
           if line.strip() and not line[0].isspace() and
           not line.startswith(("Graph execution error", "Detected at node"))]
  return lines[-1] if lines else "no message"


def masked_loss_and_correct(model: tf.keras.Model, images, labels, mask,
                            seed=None):
  """Mean cross-entropy over the unmasked examples, and their correct count.

  This is the supervised client objective; `seed` (a [2] int tensor, one per
  local step) is unused here and drives the augmentations of
  self-supervised objectives, which share this signature.
  """
  del seed  # Unused.
  logits = model(images, training=True)
  per_example = tf.keras.losses.sparse_categorical_crossentropy(
      labels, logits, from_logits=True)
  count = tf.reduce_sum(mask)
  loss = tf.reduce_sum(per_example * mask) / tf.maximum(count, 1.0)
  hits = tf.cast(tf.equal(tf.argmax(logits, -1), tf.cast(labels, tf.int64)),
                 tf.float32)
  return loss, tf.reduce_sum(hits * mask), count


class ClientWork(Protocol):
  """What one client does with the broadcast model in a round, and the
  per-client and server-side state that goes with it.

  `LocalSGD` (FedAvg, FedSGD, FedProx with `prox_mu`, the adaptive server
  optimizers' clients, DP-FedAvg's and Reptile's client side) and
  `Scaffold` implement it; a plugin algorithm may bring its own. The
  methods are pure TensorFlow so that both backends trace them: the
  `local` backend inside tf.function, the `tff` backend inside
  tff.tf_computation.
  """

  # Whether clients keep state between rounds (checkpointed per client).
  stateful: bool

  def with_objective(self, objective: Callable) -> "ClientWork":
    """A copy minimizing `objective` (see masked_loss_and_correct)."""

  def initial_client_state(self, trainable: Sequence[tf.Tensor]) -> Tensors:
    """A client's state before its first round ([] if stateless)."""

  def initial_server_extra(self, trainable: Sequence[tf.Tensor]) -> Tensors:
    """Server state beyond the model broadcast with it (SCAFFOLD's c)."""

  def update_server_extra(self, extra: Tensors, mean_extra_delta: Tensors,
                          participation: tf.Tensor) -> Tensors:
    """The server extra after a round, from the clients' mean extra delta
    and the share of clients that took part."""

  def train(self, model: tf.keras.Model, velocity: Sequence[tf.Variable],
            global_trainable: Tensors, global_non_trainable: Tensors,
            batches, num_examples: tf.Tensor, client_state: Tensors,
            server_extra: Tensors, seed: tf.Tensor) -> ClientOutput:
    """Trains `model` from the broadcast weights on `batches`."""

  def server_delta(self, mean_delta: Tensors, mean_extra_delta: Tensors,
                   server_extra: Tensors, participation: tf.Tensor
                   ) -> Tensors:
    """The delta the server optimizer applies, from the aggregated one, the
    clients' mean extra delta, the server extra before this round's update
    and the share of clients that took part (FedNova, FedDyn). Both
    backends call it only when the clients report extra deltas."""


class IndexedBatches:
  """A client's batches as rows of example indices into data held once:
  row i of `matrix` (-1 = padding) selects batch i from `x` and `y`."""

  def __init__(self, x, y, matrix: tf.Tensor, num_steps: tf.Tensor):
    self.x, self.y = x, y
    self.matrix = matrix
    self.num_steps = num_steps

  def get(self, i):
    row = self.matrix[i]
    valid = row >= 0
    safe = tf.where(valid, row, 0)
    # Padding rows are zero images: a real example there (even a masked
    # one) could carry NaN into the gradient (NaN * 0 is NaN).
    valid_images = tf.reshape(valid, [-1] + [1] * (len(self.x.shape) - 1))
    images = tf.where(valid_images, tf.gather(self.x, safe), 0.0)
    return images, tf.gather(self.y, safe), tf.cast(valid, tf.float32)


def zero_totals():
  """(loss sum, correct, examples, steps) before a client's first step."""
  return (tf.constant(0.0), tf.constant(0.0), tf.constant(0.0),
          tf.constant(0, tf.int32))


def for_each_batch(batches, step: Callable, totals):
  """Runs `step(images, labels, mask, totals)` over a client's batches (a
  tf.data.Dataset or `IndexedBatches`, as `LocalSGD.train` takes)."""
  if isinstance(batches, IndexedBatches):
    # A while loop over index rows: no per-client tf.data pipeline, which
    # costs tens of milliseconds per client inside a graph.
    for i in tf.range(batches.num_steps):
      images, labels, mask = batches.get(i)
      totals = step(images, labels, mask, totals)
  else:
    for images, labels, mask in batches:
      totals = step(images, labels, mask, totals)
  return totals


def step_seed(seed: tf.Tensor, steps: tf.Tensor) -> tf.Tensor:
  """The objective's seed of local step `steps` of a client seeded `seed`."""
  return tf.stack([seed[0], seed[1] * 100_003 + tf.cast(steps, tf.int64)])


def load_model(model: tf.keras.Model, velocity, trainable: Tensors,
               non_trainable: Tensors) -> None:
  """Assigns the broadcast (or a client's own) weights and zeroes the
  momentum buffers: the start of a client's local training."""
  for var, value in zip(model.trainable_variables, trainable):
    var.assign(value)
  for var, value in zip(model.non_trainable_variables, non_trainable):
    var.assign(value)
  for buf in velocity:
    buf.assign(tf.zeros_like(buf))


def all_finite(tensors) -> tf.Tensor:
  """Whether every entry of every tensor is finite."""
  finite = tf.constant(True)
  for t in tensors:
    finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(t)))
  return finite


class LocalSGD:
  """Local (momentum) SGD epochs from the broadcast model: FedSGD, FedAvg,
  FedAvgM/FedAdam/FedYogi, DP-FedAvg and Reptile's client side; with
  `prox_mu > 0` the FedProx proximal term mu/2 |w - w_global|^2 joins the
  loss (Li et al. 2020)."""

  stateful = False  # keeps no per-client state between rounds

  def __init__(self, config: AlgorithmConfig, prox_mu: float = 0.0,
               objective: Callable = masked_loss_and_correct):
    self.objective = objective
    self.lr = float(config.client_lr)
    self.momentum = (float(config.client_momentum)
                     if config.client_optimizer == "momentum" else 0.0)
    self.prox_mu = float(prox_mu)
    self.weight_decay = float(config.client_weight_decay)

  def with_objective(self, objective: Callable) -> "LocalSGD":
    """A copy training `objective` instead (e.g. a self-supervised loss)."""
    clone = copy.copy(self)
    clone.objective = objective
    return clone

  # Per-client and server-side extra state: none for plain local SGD.
  def initial_client_state(self, trainable: Sequence[tf.Tensor]) -> Tensors:
    return []

  def initial_server_extra(self, trainable: Sequence[tf.Tensor]) -> Tensors:
    return []

  def update_server_extra(self, extra: Tensors, mean_extra_delta: Tensors,
                          participation: tf.Tensor) -> Tensors:
    return extra

  def gradient_correction(self, client_state: Tensors,
                          server_extra: Tensors) -> Tensors:
    return []

  def server_delta(self, mean_delta: Tensors, mean_extra_delta: Tensors,
                   server_extra: Tensors, participation: tf.Tensor
                   ) -> Tensors:
    """The aggregated delta as it is (see `ClientWork.server_delta`)."""
    del mean_extra_delta, server_extra, participation  # Unused.
    return mean_delta

  def personalize(self, model: tf.keras.Model, client_state) -> None:
    """Turns `model`, holding the global model, into a client's personal
    model from its state (None: a client that never trained). Here the
    personal model is the global one; personalized algorithms override it
    (see personal_work.py)."""
    del model, client_state  # The global model is everyone's.

  def finish(self, global_trainable: Tensors, local_trainable: Tensors,
             steps: tf.Tensor, client_state: Tensors,
             server_extra: Tensors):
    """Returns (extra_delta, new client state)."""
    return [], client_state

  def after_step(self, model: tf.keras.Model) -> None:
    """Runs after each local optimizer step: the objective's own
    `after_step(model)` if it has one (BYOL's target EMA, see
    ssl_objective.SslClientObjective); nothing otherwise."""
    hook = getattr(self.objective, "after_step", None)
    if hook is not None:
      hook(model)

  def decayed(self, grads: Tensors, variables) -> Tensors:
    """`grads` with the weight decay added (on the gradient, outside the
    reported loss, so that train_loss stays comparable across decay
    settings)."""
    if not self.weight_decay:
      return grads
    return [g + self.weight_decay * v for g, v in zip(grads, variables)]

  def apply_update(self, variables, velocity, grads) -> None:
    """One (momentum) SGD step of `variables` along `grads`."""
    for var, buf, grad in zip(variables, velocity, grads):
      if self.momentum:
        buf.assign(self.momentum * buf + grad)
        var.assign_sub(self.lr * buf)
      else:
        var.assign_sub(self.lr * grad)

  def train(self, model: tf.keras.Model, velocity: Sequence[tf.Variable],
            global_trainable: Tensors, global_non_trainable: Tensors,
            batches, num_examples: tf.Tensor,
            client_state: Tensors, server_extra: Tensors,
            seed: tf.Tensor) -> ClientOutput:
    """Trains `model` (its variables are overwritten) on `batches`: a
    tf.data.Dataset of (images, labels, mask) or `IndexedBatches`.

    Call inside tf.function or a tff.tf_computation; `velocity` holds one
    momentum buffer per trainable variable, reset here. `seed` ([2] int64,
    fixed by run seed, round and client) seeds the objective's per-step
    randomness.
    """
    variables = model.trainable_variables
    load_model(model, velocity, global_trainable, global_non_trainable)
    correction = self.gradient_correction(client_state, server_extra)
    def step(images, labels, mask, totals):
      loss_sum, correct, examples, steps = totals
      with tf.GradientTape() as tape:
        loss, hits, count = self.objective(model, images, labels, mask,
                                           step_seed(seed, steps))
        objective = loss
        if self.prox_mu > 0:
          objective += 0.5 * self.prox_mu * tf.add_n([
              tf.reduce_sum(tf.square(v - g))
              for v, g in zip(variables, global_trainable)])
      grads = self.decayed(tape.gradient(objective, variables), variables)
      if correction:
        grads = [g + c for g, c in zip(grads, correction)]
      self.apply_update(variables, velocity, grads)
      self.after_step(model)
      return (loss_sum + loss * count, correct + hits, examples + count,
              steps + 1)

    totals = for_each_batch(batches, step, zero_totals())
    return self.output(
        global_trainable, global_non_trainable,
        [tf.identity(v) for v in variables],
        [tf.identity(v) for v in model.non_trainable_variables], totals,
        num_examples, client_state, server_extra)

  def output(self, global_trainable: Tensors, global_non_trainable: Tensors,
             local: Tensors, non_trainable: Tensors, totals,
             num_examples: tf.Tensor, client_state: Tensors,
             server_extra: Tensors) -> ClientOutput:
    """What a client reports after local training ended at the weights
    `local` and `non_trainable` with `totals` (loss sum, correct, examples,
    steps); the batched backend (backends/batched.py) calls it per client
    too."""
    loss_sum, correct, examples, steps = totals
    extra_delta, new_state = self.finish(global_trainable, local, steps,
                                         client_state, server_extra)
    # A client whose training blew up (NaN/Inf) is dropped from the round:
    # zero update and zero weight, state unchanged. If every client blows up
    # the weighted mean is 0/0 and the driver stops with a divergence error.
    finite = tf.logical_and(tf.math.is_finite(loss_sum),
                            all_finite(local + non_trainable))
    keep = tf.cast(finite, tf.float32)

    def kept(values, fallback):
      return [tf.where(finite, v, f) for v, f in zip(values, fallback)]

    delta = [g - v for g, v in zip(global_trainable, local)]
    return ClientOutput(
        delta=kept(delta, [tf.zeros_like(d) for d in delta]),
        non_trainable=kept(non_trainable, list(global_non_trainable)),
        weight=keep * tf.cast(num_examples, tf.float32),
        extra_delta=kept(extra_delta, [tf.zeros_like(d)
                                       for d in extra_delta]),
        client_state=kept(new_state, list(client_state)),
        dropped=1.0 - keep,
        loss_sum=loss_sum,
        correct=correct,
        examples=examples,
        steps=steps)


class WrappedWork:
  """Base of client works that wrap an algorithm's own (the upload codec,
  `compression.CompressedUpload`; BYOL's per-client target,
  `byol_target.PerClientTarget`): what a subclass does not override is the
  inner work's, and `with_objective` / `with_model` rebuild the inner work
  inside a copy of the wrapper, so the wrapper survives them."""

  def __init__(self, inner: ClientWork):
    self.inner = inner

  def __getattr__(self, name: str):
    # Settings and hooks the backends or server steps ask for: the inner
    # work's, unchanged.
    if name == "inner" or name.startswith("__"):
      raise AttributeError(name)
    return getattr(self.inner, name)

  def with_objective(self, objective: Callable) -> "WrappedWork":
    clone = copy.copy(self)
    clone.inner = self.inner.with_objective(objective)
    return clone

  def with_model(self, model: tf.keras.Model) -> "WrappedWork":
    """A copy whose inner work knows the model's layout (see
    `fedclf.federated.personal.bind_to_model`), if it asks for it."""
    clone = copy.copy(self)
    inner_with_model = getattr(self.inner, "with_model", None)
    if inner_with_model is not None:
      clone.inner = inner_with_model(model)
    return clone


class Scaffold(LocalSGD):
  """SCAFFOLD (Karimireddy et al. 2020, option II control variates).

  Each local gradient is corrected by c - c_i (server minus client control
  variate); afterwards c_i+ = c_i - c + (x - y) / (m(K) * lr) for K local
  steps (m(K) = K without momentum, below), and the server moves c by
  (|S| / N) times the mean control step.

  With momentum the corrected gradients pass through the momentum buffer,
  so K steps move the weights by lr * m(K) gradients, not lr * K, where
  m(K) = (K - b (1 - b^K) / (1 - b)) / (1 - b) for momentum b (exact for a
  constant gradient, ~K / (1 - b) for long rounds). Dividing by K * lr
  instead makes c_i about 1 / (1 - b) times the mean gradient, and the
  correction, amplified again by the buffer, overshoots: with b = 0.9 and
  10 local epochs (NIID-Bench) the training loss reached 1e11 in round 3.
  """

  stateful = True

  def initial_client_state(self, trainable):
    return [tf.zeros_like(w) for w in trainable]

  def initial_server_extra(self, trainable):
    return [tf.zeros_like(w) for w in trainable]

  def update_server_extra(self, extra, mean_extra_delta, participation):
    return [c + participation * d for c, d in zip(extra, mean_extra_delta)]

  def gradient_correction(self, client_state, server_extra):
    return [c - ci for c, ci in zip(server_extra, client_state)]

  def effective_steps(self, steps: tf.Tensor) -> tf.Tensor:
    """m(K): how many gradients' worth (times lr) K local steps move the
    weights when the gradient is constant (K without momentum)."""
    return effective_steps(steps, self.momentum)

  def finish(self, global_trainable, local_trainable, steps, client_state,
             server_extra):
    scale = 1.0 / (self.effective_steps(steps) * self.lr)
    new_state = [
        ci - c + (x - y) * scale for ci, c, x, y in zip(
            client_state, server_extra, global_trainable, local_trainable)
    ]
    # A client that ran no step (a straggler cut to zero) keeps its state.
    ran = tf.cast(steps > 0, tf.float32)
    new_state = [ran * n + (1.0 - ran) * ci
                 for n, ci in zip(new_state, client_state)]
    return [n - ci for n, ci in zip(new_state, client_state)], new_state


def effective_steps(steps: tf.Tensor, momentum: float) -> tf.Tensor:
  """m(K): how many gradients' worth (times lr) K local (momentum b) SGD
  steps move the weights when the gradient is constant:
  (K - b (1 - b^K) / (1 - b)) / (1 - b), K without momentum; at least 1.
  SCAFFOLD's control step and FedNova's normalization divide by it."""
  k = tf.maximum(tf.cast(steps, tf.float32), 1.0)
  b = momentum
  if not b:
    return k
  return (k - b * (1.0 - tf.pow(b, k)) / (1.0 - b)) / (1.0 - b)
