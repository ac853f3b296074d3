"""Federated self-supervised learning (FedSimCLR / FedU style).

Clients train an encoder and the SSL method's heads on their unlabelled
images with the method's loss; the server aggregates encoder and head weights
like any model (FedAvg by default, or any algorithm's aggregator). The labels
are only used to evaluate: kNN accuracy during training, a linear probe at
the end.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import tensorflow as tf

from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.models import build_model_parts
from fedclf.models import ModelConfig
from fedclf.ssl.augment import SslAugmentConfig
from fedclf.ssl.method import build_method
from fedclf.ssl.method import ssl_step_loss
from fedclf.ssl.method import SslConfig
from fedclf.ssl.method import SslMethod

# BYOL's target network follows the online one by an EMA after every local
# step; its per-client target has no agreed federated form (FedU aggregates
# it specially), so fedclf does not federate it yet.
UNSUPPORTED = ("byol",)


class SslTrainable(tf.keras.Model):
  """An encoder and an SSL method's heads as one model whose weights the
  federated backends broadcast and aggregate (encoder first, then heads)."""

  def __init__(self, encoder: tf.keras.Model, method: SslMethod):
    super().__init__(name="ssl_" + method.config.method)
    self.encoder = encoder
    self.heads = method.heads
    self.method = method

  def call(self, images, training=False):
    return self.encoder(images, training=training)


def build_ssl_trainable(model_name: str, input_shape: Sequence[int],
                        num_classes: int, model_config: ModelConfig,
                        ssl_config: SslConfig) -> SslTrainable:
  if ssl_config.method in UNSUPPORTED:
    raise UserError(f"ssl method {ssl_config.method!r} cannot be federated "
                    f"yet; use simclr, simsiam or barlow_twins")
  parts = build_model_parts(model_name, input_shape, num_classes,
                            model_config)
  method = build_method(ssl_config, parts.feature_dim)
  method.build(parts.encoder)
  model = SslTrainable(parts.encoder, method)
  model(tf.zeros((2,) + tuple(input_shape)))  # creates the heads' weights
  method.heads(parts.encoder(tf.zeros((2,) + tuple(input_shape))))
  return model


def ssl_objective(augment: SslAugmentConfig,
                  normalization: Optional[Normalization]) -> Callable:
  """A client objective (see client_work.masked_loss_and_correct) computing
  the SSL loss of the batch's real (unmasked) images; `correct` is 0."""

  def objective(model: SslTrainable, images, labels, mask, seed):
    del labels  # Self-supervised: labels are never seen in training.
    real = tf.boolean_mask(images, mask > 0)
    count = tf.reduce_sum(mask)
    # Contrastive losses need at least two images in the batch.
    loss = tf.cond(
        count >= 2,
        lambda: ssl_step_loss(model.method, model.encoder, real, seed,
                              augment, normalization),
        lambda: tf.constant(0.0))
    return loss, tf.constant(0.0), count

  return objective
