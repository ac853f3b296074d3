"""The SSL method interface shared by centralized and federated pretraining.

A method owns its heads (projector, predictor: trainable Keras weights) and
computes a scalar loss from an encoder and two views. The step that applies
gradients is the caller's, so the same method object serves the centralized
loop (`fedclf.ssl.pretrain`) and a federated client update:

    method = build_method(SslConfig(method="simclr"), parts.feature_dim)
    method.build(encoder)            # before any tf.function (BYOL's target)
    variables = encoder.trainable_variables + method.heads.trainable_variables

    @tf.function
    def step(images, seed):
      with tf.GradientTape() as tape:
        loss = ssl_step_loss(method, encoder, images, seed, augment_config,
                             normalization)
      grads = tape.gradient(loss, variables)
      optimizer.apply_gradients(zip(grads, variables))
      progress = optimizer.iterations / total_steps   # 0 to 1
      method.after_step(encoder, progress)  # BYOL's target EMA, else no-op
      return loss

Methods register a factory `(config: SslConfig, feature_dim: int) ->
SslMethod` in `fedclf.registry.SSL_METHODS`, one module per method under
`fedclf/ssl/methods/`, with the dataclass of their own hyper-parameters
(`SSL_METHODS.register("simclr", params=SimClrParams)`, see
`fedclf.plugin_config`), which they read from `config.params`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

import numpy as np
import tensorflow as tf

from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.models.building_blocks import BN_MOMENTUM
from fedclf.models.building_blocks import NORM_EPSILON
from fedclf.models.building_blocks import SeedStream
from fedclf.plugin_config import resolve_params
from fedclf.registry import SSL_METHODS
from fedclf.ssl.augment import SslAugmentConfig
from fedclf.ssl.augment import two_views

PROJECTOR_NORMS = ("batch", "none")


@dataclasses.dataclass(frozen=True)
class SslConfig:
  """Options every SSL method shares, and the chosen one's own.

  Attributes:
    method: a name registered in `fedclf.registry.SSL_METHODS`.
    projection_dim: width of the projector output z.
    hidden_dim: width of the projector's hidden layer.
    projector_norm: "batch" (BatchNorm in the projector/predictor, as in
      the papers) or "none" (e.g. for federated clients whose batch
      statistics are skewed; SimSiam tends to collapse without it).
    seed: seeds the heads' initialisers.
    params: the method's own hyper-parameters, the dataclass it registered
      (SimCLR's temperature, ...), or None for its defaults; `build_method`
      hands the method a config whose params are never None.
  """
  method: str = "simclr"
  projection_dim: int = 128
  hidden_dim: int = 512
  projector_norm: str = "batch"
  seed: int = 0
  params: Any = None

  def validate(self) -> None:
    SSL_METHODS.get(self.method)  # unknown method: the error lists the names
    resolve_params(SSL_METHODS, self.method, self.params)
    for name in ("projection_dim", "hidden_dim"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    if self.projector_norm not in PROJECTOR_NORMS:
      raise UserError(f"unknown projector norm {self.projector_norm!r}; "
                      f"choose one of: {', '.join(PROJECTOR_NORMS)}")
    if self.seed < 0:
      raise UserError(f"seed must be >= 0, got {self.seed}")


class SslMethod(tf.Module):
  """A self-supervised objective with its trainable heads.

  Attributes:
    config: the `SslConfig` it was built from.
    heads: Keras model holding every trainable weight of the method
      (projector, and predictor where there is one). Train
      `encoder.trainable_variables + heads.trainable_variables`.

  A method is a `tf.Module`, so `tf.train.Checkpoint(method=method)` saves
  its heads and any extra state (BYOL's target network).
  """

  def __init__(self, config: SslConfig, heads: tf.keras.Model, name: str):
    super().__init__(name=name)
    self.config = config
    self.heads = heads

  def build(self, encoder: tf.keras.Model) -> None:
    """Creates state that depends on the encoder (BYOL's target network).

    Call once, eagerly, before tracing a step that uses `loss`; variables
    cannot be created inside a tf.function's later calls. No-op by default.
    """
    del encoder

  def loss(self, encoder: tf.keras.Model, view1: tf.Tensor, view2: tf.Tensor,
           training: bool) -> tf.Tensor:
    """Scalar loss of two (normalized) views of the same batch.

    Pure TF on `encoder` and `self.heads` variables, so it can run inside
    the caller's tf.function together with the gradient step.
    """
    raise NotImplementedError

  def after_step(self, encoder: tf.keras.Model,
                 progress: Optional[tf.Tensor] = None) -> None:
    """Runs after each optimizer step (BYOL: target EMA). No-op by default.

    `progress`: the fraction of the training's steps done (0 to 1), for
    methods whose update follows a schedule; None where the trainer has no
    known total (a federated client). Only variable assignments: callable
    inside or outside a tf.function.
    """
    del encoder, progress


def build_method(config: SslConfig, feature_dim: int) -> SslMethod:
  """The registered method `config.method` for an encoder of `feature_dim`."""
  config.validate()
  if feature_dim < 1:
    raise UserError(f"feature_dim must be >= 1, got {feature_dim}")
  config = dataclasses.replace(
      config, params=resolve_params(SSL_METHODS, config.method, config.params))
  method = SSL_METHODS.get(config.method)(config, int(feature_dim))
  if not isinstance(method, SslMethod):
    # A plugin bug, not bad user input: keep the traceback.
    raise ValueError(f"ssl method {config.method!r} factory returned "
                     f"{type(method)}, not SslMethod")
  return method


def mlp(input_dim: int, hidden_dims: Tuple[int, ...], output_dim: int,
        norm: str, seeds: SeedStream, name: str,
        output_norm: bool = False) -> tf.keras.Model:
  """Dense-[BN]-ReLU per hidden width, then Dense (and BN if output_norm).

  The building block of projectors and predictors: SimCLR, SimSiam, BYOL
  and Barlow Twins all use this shape with different widths.
  """
  features = tf.keras.Input(shape=(input_dim,), dtype=tf.float32,
                            name=f"{name}_input")
  x = features
  for i, width in enumerate(hidden_dims, start=1):
    # A bias before BatchNorm is cancelled by its mean subtraction.
    x = tf.keras.layers.Dense(
        width, use_bias=norm == "none",
        kernel_initializer=seeds.glorot_uniform(), name=f"fc{i}")(x)
    if norm == "batch":
      x = tf.keras.layers.BatchNormalization(
          momentum=BN_MOMENTUM, epsilon=NORM_EPSILON, name=f"bn{i}")(x)
    x = tf.keras.layers.ReLU(name=f"relu{i}")(x)
  out = tf.keras.layers.Dense(
      output_dim, kernel_initializer=seeds.glorot_uniform(),
      use_bias=not (output_norm and norm == "batch"), dtype=tf.float32,
      name="out")(x)
  if output_norm and norm == "batch":
    out = tf.keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=NORM_EPSILON, dtype=tf.float32,
        name="out_bn")(out)
  return tf.keras.Model(features, out, name=name)


def projector_and_predictor(config: "SslConfig", feature_dim: int,
                            projector_output_norm: bool):
  """SimSiam's and BYOL's heads: projector z = g(h) and predictor p = q(z),
  whose hidden width is `config.params.predictor_hidden_dim`.

  Returns (projector, predictor, heads) where `heads` maps features to
  [z, p] and holds every trainable weight of both.
  """
  seeds = SeedStream(config.seed)
  projector = mlp(feature_dim, (config.hidden_dim,), config.projection_dim,
                  config.projector_norm, seeds, "projector",
                  output_norm=projector_output_norm)
  predictor = mlp(config.projection_dim, (config.params.predictor_hidden_dim,),
                  config.projection_dim, config.projector_norm, seeds,
                  "predictor")
  features = tf.keras.Input(shape=(feature_dim,), dtype=tf.float32,
                            name="features")
  z = projector(features)
  heads = tf.keras.Model(features, [z, predictor(z)], name="heads")
  return projector, predictor, heads


def encode_views(encoder: tf.keras.Model, view1: tf.Tensor, view2: tf.Tensor,
                 training: bool) -> tf.Tensor:
  """Encoder features of both views in one pass: [2N, feature_dim].

  One concatenated batch halves the number of encoder calls and makes
  BatchNorm statistics span both views (SimCLR's "global BN" in spirit).
  Rows [0, N) are view 1, [N, 2N) view 2.
  """
  features = encoder(tf.concat([view1, view2], axis=0), training=training)
  return tf.cast(features, tf.float32)


def split_views(x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Inverse of the concatenation in `encode_views`."""
  half = tf.shape(x)[0] // 2
  return x[:half], x[half:]


def normalize_images(images: tf.Tensor,
                     normalization: Optional[Normalization]) -> tf.Tensor:
  """(images - mean) / std per channel, as `make_pipeline` feeds models."""
  if normalization is None:
    return images
  mean = tf.constant(np.asarray(normalization.mean, np.float32))
  std = tf.constant(np.asarray(normalization.std, np.float32))
  return (images - mean) / std


def ssl_step_loss(method: SslMethod, encoder: tf.keras.Model,
                  images: tf.Tensor, seed: tf.Tensor,
                  augment_config: SslAugmentConfig,
                  normalization: Optional[Normalization] = None,
                  training: bool = True) -> tf.Tensor:
  """The loss of one training step: two views of `images`, then the method.

  Args:
    method: the SSL method (built, see `SslMethod.build`).
    encoder: image -> features model being trained.
    images: float32 [B, H, W, C] in [0, 1] (B >= 2; unnormalized, since the
      augmentations work in pixel space).
    seed: [2] int tensor; the views (and so the loss) depend on it alone.
    augment_config: the augmentations of each view.
    normalization: per-channel statistics applied to the views before the
      encoder, the same the probes and fine-tuning use (None: identity).
    training: passed to the encoder and heads (BatchNorm, dropout).

  Returns:
    Scalar float32 loss, plus any Keras regularization losses the encoder
    or heads declare.
  """
  view1, view2 = two_views(images, seed, augment_config)
  view1 = normalize_images(view1, normalization)
  view2 = normalize_images(view2, normalization)
  loss = method.loss(encoder, view1, view2, training=training)
  # Keras layer regularizers (if a model declares them) join the loss, as
  # in fedclf.train.loop.
  regularizers = list(encoder.losses) + list(method.heads.losses)
  if regularizers:
    loss += tf.add_n(regularizers)
  return loss
