"""BYOL (Grill et al. 2020): regress a slow-moving target network's
projection of the other view."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.registry import SSL_METHODS
from fedclf.ssl import losses
from fedclf.ssl.method import encode_views
from fedclf.ssl.method import projector_and_predictor
from fedclf.ssl.method import split_views
from fedclf.ssl.method import SslConfig
from fedclf.ssl.method import SslMethod


def _copy_of(model: tf.keras.Model) -> tf.keras.Model:
  """A copy of `model` with the same weights, for the target network.

  Left `trainable` although nothing trains it (no optimizer is given its
  variables, and its outputs pass through stop_gradient): Keras runs the
  BatchNormalization layers of a non-trainable model in inference mode
  even when called with training=True, and BYOL's target normalizes by
  the batch's statistics like the online network. Frozen, it normalized
  by moving averages that lag the online network (on the CIFAR-10 subset
  its probe then fell below the random-init encoder's).
  """
  copy = tf.keras.models.clone_model(model)
  copy.set_weights(model.get_weights())
  return copy


@dataclasses.dataclass(frozen=True)
class ByolParams:
  # Shared with SimSiam (same type and default): one flag serves both.
  predictor_hidden_dim: int = dataclasses.field(
      default=128, metadata={"help": "predictor bottleneck width."})
  byol_momentum: float = dataclasses.field(
      default=0.99, metadata={"help": "target EMA decay per step (with "
                              "--byol_momentum_schedule=cosine: the first "
                              "step's)."})
  byol_momentum_schedule: str = dataclasses.field(
      default="constant", metadata={
          "help": "constant, or cosine: the decay rises from "
                  "byol_momentum to 1 over the pretraining's steps (Grill "
                  "et al. 2020); centralized pretraining only."})

  def validate(self) -> None:
    if self.predictor_hidden_dim < 1:
      raise UserError(f"predictor_hidden_dim must be >= 1, got "
                      f"{self.predictor_hidden_dim}")
    if not 0.0 <= self.byol_momentum < 1.0:
      raise UserError(f"byol_momentum must be in [0, 1), got "
                      f"{self.byol_momentum}")
    if self.byol_momentum_schedule not in MOMENTUM_SCHEDULES:
      raise UserError(f"byol_momentum_schedule must be one of "
                      f"{', '.join(MOMENTUM_SCHEDULES)}, got "
                      f"{self.byol_momentum_schedule!r}")

  def federated_refusal(self) -> Optional[str]:
    """Why these parameters cannot pretrain federated, or None (see
    fedclf.plugin_config)."""
    if self.byol_momentum_schedule != "constant":
      # A client's local steps are not a fraction of a known total.
      return ("--byol_momentum_schedule=cosine is for centralized "
              "pretraining; federated BYOL keeps a constant --byol_momentum")
    return None


MOMENTUM_SCHEDULES = ("constant", "cosine")


def target_momentum(base: float, schedule: str,
                    progress: Optional[tf.Tensor]) -> tf.Tensor:
  """The target EMA decay at `progress` (the fraction of the pretraining's
  steps done, 0 to 1): `base` throughout for "constant"; for "cosine"
  1 - (1 - base) (cos(pi progress) + 1) / 2, from `base` to 1 (the BYOL
  paper's schedule: the target slows as the online network settles).
  `progress` may be None for "constant" only."""
  if schedule == "constant":
    return tf.constant(base, tf.float32)
  progress = tf.clip_by_value(tf.cast(progress, tf.float32), 0.0, 1.0)
  return 1.0 - (1.0 - base) * (tf.cos(math.pi * progress) + 1.0) / 2.0


class Byol(SslMethod):
  """Online encoder -> projector -> predictor; target encoder -> projector.

  The target network is an exponential moving average of the online one
  (`byol_momentum` per step, or the paper's cosine ramp from it to 1 with
  `byol_momentum_schedule="cosine"`, which needs the trainer to pass
  `progress`). It is state of the method, not of `heads`: a federated
  trainer that wants BYOL must keep (or average) `target_encoder` and
  `target_projector` itself (fedclf.federated.byol_target keeps them per
  client).
  """

  def __init__(self, config: SslConfig, feature_dim: int):
    projector, predictor, heads = projector_and_predictor(
        config, feature_dim, projector_output_norm=False)
    super().__init__(config, heads, name="byol")
    self.projector = projector
    self.predictor = predictor
    self.target_encoder: Optional[tf.keras.Model] = None
    self.target_projector = _copy_of(self.projector)

  def build(self, encoder: tf.keras.Model) -> None:
    if self.target_encoder is None:
      self.target_encoder = _copy_of(encoder)

  def loss(self, encoder: tf.keras.Model, view1: tf.Tensor, view2: tf.Tensor,
           training: bool) -> tf.Tensor:
    if self.target_encoder is None:
      raise ValueError("byol: call method.build(encoder) before loss()")
    _, p = self.heads(encode_views(encoder, view1, view2, training),
                      training=training)
    target = self.target_projector(
        encode_views(self.target_encoder, view1, view2, training),
        training=training)
    target = tf.stop_gradient(target)
    p1, p2 = split_views(p)
    t1, t2 = split_views(target)
    return losses.byol_loss(p1, p2, t1, t2)

  def after_step(self, encoder: tf.keras.Model,
                 progress: Optional[tf.Tensor] = None) -> None:
    if self.target_encoder is None:
      raise ValueError("byol: call method.build(encoder) before after_step()")
    params = self.config.params
    if params.byol_momentum_schedule != "constant" and progress is None:
      raise ValueError("byol: a cosine momentum schedule needs progress")
    m = target_momentum(params.byol_momentum, params.byol_momentum_schedule,
                        progress)
    # `weights` (not trainable_weights) so BatchNorm statistics follow too;
    # clones list their weights in the same order as the original.
    pairs = (list(zip(self.target_encoder.weights, encoder.weights)) +
             list(zip(self.target_projector.weights, self.projector.weights)))
    for target, online in pairs:
      target.assign(m * target + (1.0 - m) * online)


@SSL_METHODS.register("byol", params=ByolParams)
def build_byol(config: SslConfig, feature_dim: int) -> SslMethod:
  return Byol(config, feature_dim)
