"""VICReg (Bardes et al. 2022): keep the two views' embeddings close while
each embedding dimension keeps its variance and sheds its covariance."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.models.building_blocks import SeedStream
from fedclf.registry import SSL_METHODS
from fedclf.ssl import losses
from fedclf.ssl.method import encode_views
from fedclf.ssl.method import mlp
from fedclf.ssl.method import split_views
from fedclf.ssl.method import SslConfig
from fedclf.ssl.method import SslMethod


@dataclasses.dataclass(frozen=True)
class VicRegParams:
  invariance_weight: float = dataclasses.field(
      default=25.0, metadata={"help": "weight of the mean squared "
                                      "distance of the views (lambda)."})
  variance_weight: float = dataclasses.field(
      default=25.0, metadata={"help": "weight of the std hinge (mu)."})
  covariance_weight: float = dataclasses.field(
      default=1.0, metadata={"help": "weight of the off-diagonal "
                                     "covariance (nu)."})

  def validate(self) -> None:
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if not value >= 0:
        raise UserError(f"{field.name} must be >= 0, got {value}")


class VicReg(SslMethod):
  """Encoder -> 3-layer expander -> variance-invariance-covariance loss."""

  def __init__(self, config: SslConfig, feature_dim: int):
    # The paper's expander: two hidden Dense-BN-ReLU layers, a plain
    # linear output (the loss needs the raw scale for its std hinge).
    expander = mlp(feature_dim, (config.hidden_dim, config.hidden_dim),
                   config.projection_dim, config.projector_norm,
                   SeedStream(config.seed), "expander")
    super().__init__(config, expander, name="vicreg")

  def loss(self, encoder: tf.keras.Model, view1: tf.Tensor, view2: tf.Tensor,
           training: bool) -> tf.Tensor:
    z = self.heads(encode_views(encoder, view1, view2, training),
                   training=training)
    z1, z2 = split_views(z)
    params = self.config.params
    return losses.vicreg_loss(z1, z2, params.invariance_weight,
                              params.variance_weight,
                              params.covariance_weight)


@SSL_METHODS.register("vicreg", params=VicRegParams)
def build_vicreg(config: SslConfig, feature_dim: int) -> SslMethod:
  return VicReg(config, feature_dim)
