"""Barlow Twins (Zbontar et al. 2021): make the cross-correlation of the two
views' projections the identity."""

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
class BarlowTwinsParams:
  barlow_lambda: float = dataclasses.field(
      default=5e-3, metadata={"help": "off-diagonal weight."})

  def validate(self) -> None:
    if not self.barlow_lambda >= 0:
      raise UserError(f"barlow_lambda must be >= 0, got {self.barlow_lambda}")


class BarlowTwins(SslMethod):
  """Encoder -> 3-layer projector -> cross-correlation loss."""

  def __init__(self, config: SslConfig, feature_dim: int):
    # The paper's projector has two hidden layers; the loss standardizes z
    # itself, so its output needs no BN.
    projector = mlp(feature_dim, (config.hidden_dim, config.hidden_dim),
                    config.projection_dim, config.projector_norm,
                    SeedStream(config.seed), "projector")
    super().__init__(config, projector, name="barlow_twins")

  def loss(self, encoder: tf.keras.Model, view1: tf.Tensor, view2: tf.Tensor,
           training: bool) -> tf.Tensor:
    z = self.heads(encode_views(encoder, view1, view2, training),
                   training=training)
    z1, z2 = split_views(z)
    return losses.barlow_twins_loss(z1, z2, self.config.params.barlow_lambda)


@SSL_METHODS.register("barlow_twins", params=BarlowTwinsParams)
def build_barlow_twins(config: SslConfig, feature_dim: int) -> SslMethod:
  return BarlowTwins(config, feature_dim)
