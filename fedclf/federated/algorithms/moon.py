"""MOON (Li, He and Song 2021, "Model-Contrastive Federated Learning"):
local training pulls the model's representation toward the global model's
and away from the client's previous local model's."""

from __future__ import annotations

import copy
import dataclasses
import functools

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.config import AlgorithmConfig
from fedclf.registry import ALGORITHMS


@dataclasses.dataclass(frozen=True)
class MoonParams:
  moon_mu: float = dataclasses.field(
      default=1.0, metadata={"help": "weight of MOON's model-contrastive "
                                     "loss (paper: 5 for CIFAR-10, 1 for "
                                     "CIFAR-100 and Tiny-ImageNet)."})
  moon_temperature: float = dataclasses.field(
      default=0.5, metadata={"help": "temperature of MOON's "
                                     "model-contrastive loss."})

  def validate(self) -> None:
    if self.moon_mu < 0:
      raise UserError(f"moon_mu must be >= 0, got {self.moon_mu}")
    if self.moon_temperature <= 0:
      raise UserError(
          f"moon_temperature must be > 0, got {self.moon_temperature}")


def contrastive_loss(z, z_glob, z_prev, temperature: float) -> tf.Tensor:
  """Per example -log(e^(s(z, z_glob)/t) / (e^(s(z, z_glob)/t) +
  e^(s(z, z_prev)/t))) with s the cosine similarity."""
  z, z_glob, z_prev = (tf.math.l2_normalize(t, -1)
                       for t in (z, z_glob, z_prev))
  positive = tf.reduce_sum(z * z_glob, -1) / temperature
  negative = tf.reduce_sum(z * z_prev, -1) / temperature
  return tf.reduce_logsumexp(tf.stack([positive, negative], -1),
                             -1) - positive


def _features(model: tf.keras.Model, weights, images) -> tf.Tensor:
  """The encoder's output for `images` with the trainable `weights` (put in
  the model's variables; the caller restores them), no gradient, inference
  mode (BatchNorm: the model's current moving statistics)."""
  for var, value in zip(model.trainable_variables, weights):
    var.assign(value)
  return tf.stop_gradient(model.get_layer("encoder")(images, training=False))


class MoonSGD(LocalSGD):
  """MOON's client: local (momentum) SGD on cross-entropy + mu * l_con.

  z is the encoder's output (the zoo models are encoder + head; the paper
  adds a projection head, which the zoo models have not, so l_con is on the
  features the head classifies). The global and previous models'
  representations are computed with the replica itself: each step puts
  their weights in its variables for a forward pass without gradient and
  restores the local ones before the trained forward pass, so no second
  and third model per client is needed and both backends run the same code.

  Client state: the client's previous local model (trainable weights).
  Before a client's first round it is the broadcast model (as the paper's
  code, which starts the previous models as copies of the global one), so
  l_con is then the constant log 2 and the round is FedAvg's. The
  reported training loss includes mu * l_con. MOON trains the supervised
  objective only (a self-supervised run is refused).
  """

  stateful = True

  def __init__(self, config: AlgorithmConfig, mu: float,
               temperature: float):
    super().__init__(config)
    self.mu = float(mu)
    self.temperature = float(temperature)

  def with_objective(self, objective):
    raise UserError("moon trains the supervised cross-entropy with its "
                    "model-contrastive term; it has no self-supervised form")

  def initial_client_state(self, trainable):
    return [tf.identity(w) for w in trainable]

  def finish(self, global_trainable, local_trainable, steps, client_state,
             server_extra):
    del global_trainable, steps, server_extra  # Unused.
    return [], list(local_trainable)

  def train(self, model, velocity, global_trainable, global_non_trainable,
            batches, num_examples, client_state, server_extra, seed):
    clone = copy.copy(self)
    clone.objective = functools.partial(
        self.loss, global_trainable=list(global_trainable),
        previous=list(client_state))
    return LocalSGD.train(clone, model, velocity, global_trainable,
                          global_non_trainable, batches, num_examples,
                          client_state, server_extra, seed)

  def loss(self, model, images, labels, mask, seed, global_trainable,
           previous):
    """Masked mean of CE + mu * l_con, correct count, example count."""
    del seed  # Unused: no per-step randomness.
    local = [tf.identity(v) for v in model.trainable_variables]
    z_glob = _features(model, global_trainable, images)
    z_prev = _features(model, previous, images)
    for var, value in zip(model.trainable_variables, local):
      var.assign(value)
    z = model.get_layer("encoder")(images, training=True)
    logits = model.get_layer("head")(z, training=True)
    per_example = tf.keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True) + self.mu * contrastive_loss(
            z, z_glob, z_prev, self.temperature)
    count = tf.reduce_sum(mask)
    loss = tf.reduce_sum(per_example * mask) / tf.maximum(count, 1.0)
    hits = tf.cast(tf.equal(tf.argmax(logits, -1), tf.cast(labels, tf.int64)),
                   tf.float32)
    return loss, tf.reduce_sum(hits * mask), count


@ALGORITHMS.register("moon", params=MoonParams)
def moon(config: AlgorithmConfig, params: MoonParams) -> Algorithm:
  """MOON (Li et al. 2021): model-contrastive local training (`moon_mu`,
  `moon_temperature`)."""
  return Algorithm("moon", MoonSGD(config, params.moon_mu,
                                   params.moon_temperature), config.server)
