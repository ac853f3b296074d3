"""SimCLR (Chen et al. 2020): contrast two views against the whole batch."""

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
class SimClrParams:
  temperature: float = dataclasses.field(
      default=0.5, metadata={"help": "NT-Xent temperature."})

  def validate(self) -> None:
    if not self.temperature > 0:
      raise UserError(f"temperature must be > 0, got {self.temperature}")


class SimClr(SslMethod):
  """Encoder -> 2-layer projector -> NT-Xent over the 2N projections."""

  def __init__(self, config: SslConfig, feature_dim: int):
    projector = mlp(feature_dim, (config.hidden_dim,), config.projection_dim,
                    config.projector_norm, SeedStream(config.seed), "projector")
    super().__init__(config, projector, name="simclr")

  def loss(self, encoder: tf.keras.Model, view1: tf.Tensor, view2: tf.Tensor,
           training: bool) -> tf.Tensor:
    z = self.heads(encode_views(encoder, view1, view2, training),
                   training=training)
    z1, z2 = split_views(z)
    return losses.nt_xent(z1, z2, self.config.params.temperature)


@SSL_METHODS.register("simclr", params=SimClrParams)
def build_simclr(config: SslConfig, feature_dim: int) -> SslMethod:
  return SimClr(config, feature_dim)
