"""Federated self-supervised learning (FedSimCLR / FedU style).

Clients train an encoder and the SSL method's heads on their unlabelled
images with the method's loss; the server aggregates encoder and head weights
like any model (FedAvg by default, or any algorithm's aggregator). The labels
are only used to evaluate: kNN accuracy during training, a linear probe at
the end. BYOL's target network is per-client state (byol_target.py).
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from fedclf.data.preprocess import Normalization
from fedclf.models import build_model_parts
from fedclf.models import ModelConfig
from fedclf.ssl.augment import SslAugmentConfig
from fedclf.ssl.method import build_method
from fedclf.ssl.method import ssl_step_loss
from fedclf.ssl.method import SslConfig
from fedclf.ssl.method import SslMethod


class SslTrainable(tf.keras.Model):
  """An encoder and an SSL method's heads as one model whose weights the
  federated backends broadcast and aggregate (encoder first, then heads)."""

  def __init__(self, encoder: tf.keras.Model, method: SslMethod):
    super().__init__(name="ssl_" + method.config.method)
    self.encoder = encoder
    self.heads = method.heads
    # Untracked: Keras would list the method's own variables (BYOL's target
    # network) among the model's, and the server would average and the
    # clients differentiate them; `heads` are the method's trainable part.
    object.__setattr__(self, "method", method)

  def call(self, images, training=False):
    return self.encoder(images, training=training)


def build_ssl_trainable(model_name: str, input_shape: Sequence[int],
                        num_classes: int, model_config: ModelConfig,
                        ssl_config: SslConfig) -> SslTrainable:
  parts = build_model_parts(model_name, input_shape, num_classes,
                            model_config)
  method = build_method(ssl_config, parts.feature_dim)
  method.build(parts.encoder)
  model = SslTrainable(parts.encoder, method)
  model(tf.zeros((2,) + tuple(input_shape)))  # creates the heads' weights
  method.heads(parts.encoder(tf.zeros((2,) + tuple(input_shape))))
  return model


class SslClientObjective:
  """A client objective (see client_work.masked_loss_and_correct) computing
  the SSL loss of the batch's real (unmasked) images; `correct` is 0.

  `after_step` runs after each local optimizer step (LocalSGD calls it):
  the method's own (BYOL: the target network's EMA of the online one).
  """

  def __init__(self, augment: SslAugmentConfig,
               normalization: Optional[Normalization], method: str):
    self.augment = augment
    self.normalization = normalization
    self.method = method  # the SSL method's name

  def after_step(self, model: SslTrainable) -> None:
    model.method.after_step(model.encoder)

  def __call__(self, model: SslTrainable, images, labels, mask, seed):
    del labels  # Self-supervised: labels are never seen in training.
    real = tf.boolean_mask(images, mask > 0)
    count = tf.reduce_sum(mask)
    # Contrastive losses need at least two images in the batch.
    loss = tf.cond(
        count >= 2,
        lambda: ssl_step_loss(model.method, model.encoder, real, seed,
                              self.augment, self.normalization),
        lambda: tf.constant(0.0))
    return loss, tf.constant(0.0), count


def ssl_objective(augment: SslAugmentConfig,
                  normalization: Optional[Normalization],
                  method: str = "simclr") -> SslClientObjective:
  """The client objective of SSL method `method` (see SslClientObjective)."""
  return SslClientObjective(augment, normalization, method)
