"""Client work of the personalized algorithms: part of the model, or a whole
second model, stays on each client as its state.

- `PersonalPartSGD`: local SGD from the global model with the client's own
  values of some variables (FedPer: the head; FedBN: the BatchNorm layers);
  those are never averaged (their delta is reported as zero) and the
  client's personal model is the global model with its own part.
- `FedRepWork`: FedPer's layout, trained in two phases (Collins et al.
  2021): the head with the encoder frozen, then the encoder with the head
  frozen.
- `DittoWork`: FedAvg's local training of the global model, and a personal
  model v_i trained on the same batches on CE + lambda/2 |v_i - w|^2 (Li et
  al. 2021).
- `PerFedAvgWork`: first-order MAML local steps (Fallah et al. 2020).

Like `LocalSGD` (their base) they are pure TensorFlow over (images,
labels, mask) batches, so both backends run them.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Optional, Sequence

import tensorflow as tf

from fedclf.federated.client_work import all_finite
from fedclf.federated.client_work import ClientOutput
from fedclf.federated.client_work import for_each_batch
from fedclf.federated.client_work import IndexedBatches
from fedclf.federated.client_work import load_model
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.client_work import step_seed
from fedclf.federated.client_work import Tensors
from fedclf.federated.client_work import zero_totals
from fedclf.federated.config import AlgorithmConfig
from fedclf.federated.personal import head_mask
from fedclf.federated.personal import merge
from fedclf.federated.personal import PersonalMask
from fedclf.federated.personal import pick


def apply_gradients(work: LocalSGD, variables, velocity, grads) -> None:
  """`work`'s (momentum) SGD step with its weight decay on the gradient."""
  work.apply_update(variables, velocity, work.decayed(grads, variables))


def sgd_step(work: LocalSGD, model: tf.keras.Model, velocity,
             trains: Sequence[bool], seed: tf.Tensor,
             anchor: Optional[Tensors] = None, anchor_mu: float = 0.0):
  """A step function for `for_each_batch`: one SGD step of the trainable
  variables where `trains` is true on `work`'s objective, plus
  anchor_mu/2 |v - anchor|^2 over them when `anchor` is given (Ditto)."""
  chosen = [i for i, t in enumerate(trains) if t]
  variables = [model.trainable_variables[i] for i in chosen]
  buffers = [velocity[i] for i in chosen]

  def step(images, labels, mask, totals):
    loss_sum, correct, examples, steps = totals
    with tf.GradientTape() as tape:
      loss, hits, count = work.objective(model, images, labels, mask,
                                         step_seed(seed, steps))
      objective = loss
      if anchor is not None:
        objective += 0.5 * anchor_mu * tf.add_n([
            tf.reduce_sum(tf.square(v - anchor[i]))
            for i, v in zip(chosen, variables)])
    grads = tape.gradient(objective, variables)
    apply_gradients(work, variables, buffers, grads)
    return (loss_sum + loss * count, correct + hits, examples + count,
            steps + 1)

  return step


def personal_output(global_trainable: Tensors, global_non_trainable: Tensors,
                    model: tf.keras.Model, totals, num_examples: tf.Tensor,
                    client_state: Tensors, new_state: Tensors,
                    mask: PersonalMask) -> ClientOutput:
  """What a client reports after local training of `model`: the shared
  variables' delta (zero for the personal ones, which the server never
  sees), the shared non-trainable values (the global ones for personal
  statistics), and its new state; a non-finite client is dropped with its
  state unchanged, as in `LocalSGD.train`."""
  loss_sum, correct, examples, steps = totals
  local = [tf.identity(v) for v in model.trainable_variables]
  local_nt = [tf.identity(v) for v in model.non_trainable_variables]
  finite = tf.logical_and(tf.math.is_finite(loss_sum),
                          all_finite(local + local_nt + list(new_state)))
  keep = tf.cast(finite, tf.float32)
  delta = [tf.zeros_like(g) if m else g - v
           for g, v, m in zip(global_trainable, local, mask.trainable)]
  non_trainable = merge(local_nt, pick(global_non_trainable,
                                       mask.non_trainable),
                        mask.non_trainable)

  def kept(values, fallback):
    return [tf.where(finite, v, f) for v, f in zip(values, fallback)]

  return ClientOutput(
      delta=kept(delta, [tf.zeros_like(d) for d in delta]),
      non_trainable=kept(non_trainable, list(global_non_trainable)),
      weight=keep * tf.cast(num_examples, tf.float32),
      extra_delta=[], client_state=kept(new_state, list(client_state)),
      dropped=1.0 - keep, loss_sum=loss_sum, correct=correct,
      examples=examples, steps=steps)


class PersonalPartSGD(LocalSGD):
  """Local SGD from the global model with the client's own values of the
  variables `mask_of(model)` selects (default: the head, FedPer; Arivazhagan
  et al. 2019). Those stay on the client (its state: the personal trainable
  values, then the personal non-trainable ones) and are never averaged; the
  personal model is the global model with the client's part. A client
  that never trained starts from the global values (the initial model's
  statistics for non-trainable ones)."""

  stateful = True

  def __init__(self, config: AlgorithmConfig,
               mask_of: Callable[[tf.keras.Model], PersonalMask] = head_mask):
    super().__init__(config)
    self.mask_of = mask_of
    self.mask: Optional[PersonalMask] = None
    self.initial_statistics: list = []

  def with_model(self, model: tf.keras.Model) -> "PersonalPartSGD":
    """A copy that knows `model`'s personal variables (before training)."""
    clone = copy.copy(self)
    clone.mask = self.mask_of(model)
    clone.initial_statistics = [
        v.numpy() for v in pick(model.non_trainable_variables,
                                clone.mask.non_trainable)]
    return clone

  def _mask(self) -> PersonalMask:
    if self.mask is None:
      raise ValueError("call with_model(model) first (Simulation does)")
    return self.mask

  def initial_client_state(self, trainable):
    return ([tf.identity(w) for w in pick(trainable, self._mask().trainable)]
            + [tf.constant(s) for s in self.initial_statistics])

  def personalize(self, model: tf.keras.Model, client_state) -> None:
    """Loads the client's part into `model` (holding the global model)."""
    if client_state is None:
      return
    mask = self.mask_of(model)
    personal = (pick(model.trainable_variables, mask.trainable) +
                pick(model.non_trainable_variables, mask.non_trainable))
    for var, value in zip(personal, client_state):
      var.assign(value)

  def local_passes(self, model, velocity, batches, seed):
    """The local training; returns the totals (FedPer: one pass over the
    batches, every variable)."""
    trains = [True] * len(model.trainable_variables)
    return for_each_batch(batches, sgd_step(self, model, velocity, trains,
                                            seed), zero_totals())

  def train(self, model, velocity, global_trainable, global_non_trainable,
            batches, num_examples, client_state, server_extra, seed):
    del server_extra  # None kept.
    mask = self._mask()
    split = sum(mask.trainable)
    load_model(model, velocity,
               merge(global_trainable, client_state[:split], mask.trainable),
               merge(global_non_trainable, client_state[split:],
                     mask.non_trainable))
    totals = self.local_passes(model, velocity, batches, seed)
    new_state = ([tf.identity(v) for v in pick(model.trainable_variables,
                                               mask.trainable)] +
                 [tf.identity(v) for v in pick(model.non_trainable_variables,
                                               mask.non_trainable)])
    return personal_output(global_trainable, global_non_trainable, model,
                           totals, num_examples, client_state, new_state,
                           mask)


class FedRepWork(PersonalPartSGD):
  """FedRep (Collins et al. 2021): FedPer's personal head, trained first
  for `head_passes` passes over the round's batches with the encoder
  frozen, then one pass trains the encoder with the head frozen."""

  def __init__(self, config: AlgorithmConfig, head_passes: int):
    super().__init__(config)
    self.head_passes = int(head_passes)

  def local_passes(self, model, velocity, batches, seed):
    head = self._mask().trainable
    totals = zero_totals()
    head_step = sgd_step(self, model, velocity, head, seed)
    for _ in range(self.head_passes):
      totals = for_each_batch(batches, head_step, totals)
    encoder = [not h for h in head]
    return for_each_batch(batches, sgd_step(self, model, velocity, encoder,
                                            seed), totals)


class DittoWork(LocalSGD):
  """Ditto (Li et al. 2021): the global model trains as FedAvg's; each
  client also keeps a personal model v_i (its state, all trainable
  variables; a new client's starts at the global model), trained on the
  same batches on CE + lam/2 |v_i - w_global|^2. Personal model: v_i with
  the global non-trainable statistics."""

  stateful = True

  def __init__(self, config: AlgorithmConfig, lam: float):
    super().__init__(config)
    self.lam = float(lam)

  def initial_client_state(self, trainable):
    return [tf.identity(w) for w in trainable]

  def personalize(self, model: tf.keras.Model, client_state) -> None:
    if client_state is None:
      return
    for var, value in zip(model.trainable_variables, client_state):
      var.assign(value)

  def train(self, model, velocity, global_trainable, global_non_trainable,
            batches, num_examples, client_state, server_extra, seed):
    out = super().train(model, velocity, global_trainable,
                        global_non_trainable, batches, num_examples,
                        client_state, server_extra, seed)
    load_model(model, velocity, client_state, global_non_trainable)
    trains = [True] * len(model.trainable_variables)
    personal = for_each_batch(batches, sgd_step(
        self, model, velocity, trains, seed, list(global_trainable),
        self.lam), zero_totals())
    v = [tf.identity(w) for w in model.trainable_variables]
    finite = tf.logical_and(tf.math.is_finite(personal[0]), all_finite(v))
    # v_i is kept only if both models stayed finite (a dropped client's
    # state stays as it was).
    finite = tf.logical_and(finite, out.dropped < 0.5)
    state = [tf.where(finite, a, b) for a, b in zip(v, client_state)]
    return dataclasses.replace(out, client_state=state)


def batch_pairs(batches, step: Callable, totals):
  """Runs `step(first, second, totals)` over each batch and the batch after
  it (the last pairs with the first; one batch pairs with itself)."""
  if isinstance(batches, IndexedBatches):
    n = batches.num_steps
    for i in tf.range(n):
      totals = step(batches.get(i), batches.get(tf.math.floormod(i + 1, n)),
                    totals)
  else:
    following = batches.skip(1).concatenate(batches.take(1))
    for first, second in tf.data.Dataset.zip((batches, following)):
      totals = step(first, second, totals)
  return totals


class PerFedAvgWork(LocalSGD):
  """Per-FedAvg, first-order (Fallah et al. 2020): each local step takes a
  batch D1 and the next batch D2, w' = w - alpha grad L(w; D1), then
  w <- w - beta grad L(w'; D2) (plain SGD: client momentum and weight
  decay are not used). The model learned is a starting point for one (or
  k) fine-tuning steps, which is how it is evaluated."""

  def __init__(self, config: AlgorithmConfig, alpha: float, beta: float):
    super().__init__(config)
    self.alpha, self.beta = float(alpha), float(beta)

  def _meta_step(self, model, seed):
    variables = model.trainable_variables

    def step(first, second, totals):
      loss_sum, correct, examples, steps = totals
      start = [tf.identity(v) for v in variables]
      with tf.GradientTape() as tape:
        loss, hits, count = self.objective(model, *first,
                                           step_seed(seed, steps))
      for var, grad in zip(variables, tape.gradient(loss, variables)):
        var.assign_sub(self.alpha * grad)
      with tf.GradientTape() as tape:
        outer, _, _ = self.objective(model, *second,
                                     step_seed(seed, steps + 1_000_000))
      for var, w, grad in zip(variables, start,
                              tape.gradient(outer, variables)):
        var.assign(w - self.beta * grad)
      return (loss_sum + loss * count, correct + hits, examples + count,
              steps + 1)

    return step

  def train(self, model, velocity, global_trainable, global_non_trainable,
            batches, num_examples, client_state, server_extra, seed):
    del server_extra  # None kept.
    load_model(model, velocity, global_trainable, global_non_trainable)
    totals = batch_pairs(batches, self._meta_step(model, seed), zero_totals())
    shared = PersonalMask((False,) * len(model.trainable_variables),
                          (False,) * len(model.non_trainable_variables))
    return personal_output(global_trainable, global_non_trainable, model,
                           totals, num_examples, client_state, [], shared)


def cycled(batches, steps: int):
  """The client's batches cycled to exactly `steps` batches (none for a
  client without any)."""
  if isinstance(batches, IndexedBatches):
    have = batches.num_steps
    rows = tf.math.floormod(tf.range(steps), tf.maximum(have, 1))
    return IndexedBatches(batches.x, batches.y,
                          tf.gather(batches.matrix, rows),
                          tf.where(have > 0, steps, 0))
  return batches.repeat().take(steps)


class ReptileWork(LocalSGD):
  """Reptile's inner loop (Nichol et al. 2018) as a client: exactly
  `inner_steps` SGD steps (cycling through the client's batches; 0: the
  round's local epochs, as FedAvg), and every client that trained counts
  as one task in the meta step: its update is weighted 1, not by its
  example count as in FedAvg. The server's step (server_lr) is the meta
  step size epsilon: phi <- phi + epsilon * mean_i(W_i - phi)."""

  def __init__(self, config: AlgorithmConfig, inner_steps: int):
    super().__init__(config)
    self.inner_steps = int(inner_steps)

  def train(self, model, velocity, global_trainable, global_non_trainable,
            batches, num_examples, client_state, server_extra, seed):
    if self.inner_steps:
      batches = cycled(batches, self.inner_steps)
    out = super().train(model, velocity, global_trainable,
                        global_non_trainable, batches, num_examples,
                        client_state, server_extra, seed)
    task = tf.minimum(tf.cast(num_examples, tf.float32), 1.0)
    return dataclasses.replace(out, weight=(1.0 - out.dropped) * task)
