"""SimSiam (Chen & He 2021): predict one view's projection from the other's,
with a stop-gradient instead of negatives or a momentum encoder."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.registry import SSL_METHODS
from fedclf.ssl import losses
from fedclf.ssl.method import encode_views
from fedclf.ssl.method import projector_and_predictor
from fedclf.ssl.method import split_views
from fedclf.ssl.method import SslConfig
from fedclf.ssl.method import SslMethod


@dataclasses.dataclass(frozen=True)
class SimSiamParams:
  predictor_hidden_dim: int = dataclasses.field(
      default=128, metadata={"help": "predictor bottleneck width."})

  def validate(self) -> None:
    if self.predictor_hidden_dim < 1:
      raise UserError(f"predictor_hidden_dim must be >= 1, got "
                      f"{self.predictor_hidden_dim}")


class SimSiam(SslMethod):
  """Encoder -> projector (BN on its output) -> bottleneck predictor."""

  def __init__(self, config: SslConfig, feature_dim: int):
    # As in the paper: BN on the projector's output too, and a predictor
    # whose hidden layer is a bottleneck (predictor_hidden_dim).
    projector, predictor, heads = projector_and_predictor(
        config, feature_dim, projector_output_norm=True)
    super().__init__(config, heads, name="simsiam")
    self.projector = projector
    self.predictor = predictor

  def loss(self, encoder: tf.keras.Model, view1: tf.Tensor, view2: tf.Tensor,
           training: bool) -> tf.Tensor:
    z, p = self.heads(encode_views(encoder, view1, view2, training),
                      training=training)
    z1, z2 = split_views(z)
    p1, p2 = split_views(p)
    return losses.simsiam_loss(p1, p2, z1, z2)


@SSL_METHODS.register("simsiam", params=SimSiamParams)
def build_simsiam(config: SslConfig, feature_dim: int) -> SslMethod:
  return SimSiam(config, feature_dim)
