"""q-FedAvg (Li et al. 2020, "Fair Resource Allocation in Federated
Learning"): clients with a higher loss weigh more (q-FFL), for a more
uniform accuracy across clients."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.client_work import ClientOutput
from fedclf.federated.client_work import IndexedBatches
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.config import AlgorithmConfig
from fedclf.registry import ALGORITHMS


@dataclasses.dataclass(frozen=True)
class QFedAvgParams:
  qffl_q: float = dataclasses.field(
      default=1.0, metadata={"help": "q-FFL's fairness exponent q (0: the "
                                     "unweighted mean of the deltas)."})

  def validate(self) -> None:
    if self.qffl_q < 0:
      raise UserError(f"qffl_q must be >= 0, got {self.qffl_q}")


def mean_loss(objective, model: tf.keras.Model, batches,
              num_examples: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """`objective`'s mean over the unmasked examples of `batches` (as
  `LocalSGD.train` takes them) for the model's current weights. Only the
  first epoch's batches: each epoch holds every example once, so the later
  ones would repeat the same mean at the cost of more forward passes."""
  def add(images, labels, mask, totals):
    loss, _, count = objective(model, images, labels, mask, seed)
    return totals[0] + loss * count, totals[1] + count

  totals = (tf.constant(0.0), tf.constant(0.0))
  num_examples = tf.cast(num_examples, tf.float32)
  if isinstance(batches, IndexedBatches):
    for i in tf.range(batches.num_steps):
      if totals[1] >= num_examples:
        break
      images, labels, mask = batches.get(i)
      totals = add(images, labels, mask, totals)
  else:
    for images, labels, mask in batches:
      if totals[1] >= num_examples:
        break
      totals = add(images, labels, mask, totals)
  return totals[0] / tf.maximum(totals[1], 1.0)


class QFedAvgSGD(LocalSGD):
  """q-FedAvg's client: local SGD, then the q-FFL report.

  F_i is the broadcast model's loss on the client's training batches
  before local training (one extra forward pass), L = 1 / client_lr the
  Lipschitz estimate (as the paper), Delta_i = L (w - w_i). The client
  reports weight h_i = q F_i^(q-1) |Delta_i|^2 + L F_i^q and delta
  F_i^q Delta_i / h_i, so the aggregator's weighted mean is the paper's
  step sum_i F_i^q Delta_i / sum_i h_i on both backends (server SGD with
  lr 1 applies it as it is).
  """

  def __init__(self, config: AlgorithmConfig, q: float):
    super().__init__(config)
    self.q = float(q)
    self.lipschitz = 1.0 / self.lr

  def train(self, model, velocity, global_trainable, global_non_trainable,
            batches, num_examples, client_state, server_extra,
            seed) -> ClientOutput:
    for var, value in zip(model.trainable_variables, global_trainable):
      var.assign(value)
    for var, value in zip(model.non_trainable_variables,
                          global_non_trainable):
      var.assign(value)
    # F_i > 0 so that F_i^(q-1) stays finite for q < 1.
    loss = tf.maximum(mean_loss(self.objective, model, batches,
                                num_examples, seed), 1e-10)
    out = super().train(model, velocity, global_trainable,
                        global_non_trainable, batches, num_examples,
                        client_state, server_extra, seed)
    delta, weight = self.report(out.delta, loss)
    # Dropped as `LocalSGD.train` drops a client, also if F_i was not finite.
    kept = tf.logical_and(out.dropped < 0.5, tf.math.is_finite(weight))
    return dataclasses.replace(
        out, delta=[tf.where(kept, d, tf.zeros_like(d)) for d in delta],
        weight=tf.where(kept, weight, 0.0),
        dropped=1.0 - tf.cast(kept, tf.float32))

  def report(self, delta, loss):
    """(F^q Delta / h, h) for the model delta w - w_i and the loss F."""
    scaled = [self.lipschitz * d for d in delta]
    norm2 = tf.add_n([tf.reduce_sum(tf.square(d)) for d in scaled])
    loss_q = tf.pow(loss, self.q)
    h = self.q * tf.pow(loss, self.q - 1.0) * norm2 + self.lipschitz * loss_q
    return [loss_q * d / h for d in scaled], h


@ALGORITHMS.register("qfedavg", params=QFedAvgParams)
def qfedavg(config: AlgorithmConfig, params: QFedAvgParams) -> Algorithm:
  """q-FedAvg (Li et al. 2020): q-FFL fair aggregation (`qffl_q`)."""
  return Algorithm("qfedavg", QFedAvgSGD(config, params.qffl_q),
                   config.server)
