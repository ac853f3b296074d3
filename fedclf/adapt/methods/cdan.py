"""CDAN(+E): conditional adversarial domain adaptation (Long et al. 2018,
NeurIPS).

DANN's domain classifier sees the features alone, so it aligns the two
marginal feature distributions even where that puts target digits of one
class next to source digits of another. CDAN's discriminator reads the
multilinear map f (x) g of the features f and the classifier's softmax
g, the outer product (or, when d_f * classes exceeds `FULL_MAP_LIMIT`, its
randomized approximation with fixed Gaussian matrices), so it aligns the
joint distribution of features and predictions. With entropy conditioning
(CDAN+E, the default) each example's discriminator loss is weighted by
1 + exp(-H(g)): confident predictions, the ones worth aligning, weigh more.
As in the paper's code, g enters the map and the weights as a constant (no
gradient through them); the features reach the encoder through the
gradient-reversal layer. Training loop, schedules and epoch:
`fedclf.adapt.adversarial_training`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Tuple

import tensorflow as tf

from fedclf.adapt import alignment_losses as losses
from fedclf.adapt.adversarial_training import AdversarialSchedule
from fedclf.adapt.adversarial_training import Adversary
from fedclf.adapt.adversarial_training import build_domain_classifier
from fedclf.adapt.adversarial_training import build_feature_tap
from fedclf.adapt.adversarial_training import check_non_negative
from fedclf.adapt.adversarial_training import feature_layer_field
from fedclf.adapt.adversarial_training import train_adversarially
from fedclf.adapt.grl import gradient_reversal
from fedclf.adapt.task import AdaptationResult
from fedclf.adapt.task import AdaptationTask
from fedclf.errors import UserError
from fedclf.registry import ADAPTATION_METHODS

# The paper's code uses the full map up to 4096 columns, the random one
# beyond.
FULL_MAP_LIMIT = 4096
# Offsets the random matrices' seed from the model's.
_PROJECTION_SEED_OFFSET = 15_485_863


@dataclasses.dataclass(frozen=True)
class CdanParams(AdversarialSchedule):
  """CDAN's hyper-parameters; each is a flag of its name (the schedule's
  and --dann_feature_layer are shared with dann).

  Attributes:
    cdan_hidden: hidden widths of the conditional discriminator (ReLU).
    cdan_weight: the largest lambda (the schedule is scaled by it).
    cdan_entropy: CDAN+E's entropy conditioning.
    cdan_random_dim: the randomized map's width, used when the full map
      would exceed `FULL_MAP_LIMIT` columns.
    dann_feature_layer: the features f of the map (as dann's).
  """
  cdan_hidden: Tuple[int, ...] = dataclasses.field(
      default=(500, 500),
      metadata={"help": "Hidden widths of CDAN's discriminator MLP."})
  cdan_weight: float = dataclasses.field(
      default=1.0,
      metadata={"help": "Largest adaptation factor lambda of cdan."})
  cdan_entropy: bool = dataclasses.field(
      default=True,
      metadata={"help": "Entropy conditioning (CDAN+E): weight each "
                        "example's discriminator loss by 1+exp(-H)."})
  cdan_random_dim: int = dataclasses.field(
      default=1024,
      metadata={"help": "Width of the randomized multilinear map, used when "
                        "features x classes exceeds 4096."})
  dann_feature_layer: str = feature_layer_field()

  def validate(self) -> None:
    super().validate()
    if any(w < 1 for w in self.cdan_hidden):
      raise UserError(f"cdan discriminator widths must be >= 1, got "
                      f"{list(self.cdan_hidden)}")
    if self.cdan_random_dim < 1:
      raise UserError(f"cdan_random_dim must be >= 1, got "
                      f"{self.cdan_random_dim}")
    check_non_negative("cdan_weight", self.cdan_weight)


def conditional_map(feature_dim: int, num_classes: int, random_dim: int,
                    seed: int) -> Tuple[Callable[..., tf.Tensor], int]:
  """(features, probs) -> the discriminator's input, and its width: the
  full multilinear map up to `FULL_MAP_LIMIT` columns, else the randomized
  one with `random_dim` columns."""
  if feature_dim * num_classes <= FULL_MAP_LIMIT:
    return losses.multilinear_map, feature_dim * num_classes
  r_features, r_probs = (tf.constant(m) for m in losses.random_projections(
      feature_dim, num_classes, random_dim, seed + _PROJECTION_SEED_OFFSET))
  return (lambda f, g: losses.randomized_multilinear_map(
      f, g, r_features, r_probs)), random_dim


@ADAPTATION_METHODS.register("cdan", params=CdanParams)
def cdan(task: AdaptationTask) -> AdaptationResult:
  params: CdanParams = task.method_params("cdan")
  model = task.build_classifier()
  tap = build_feature_tap(model.get_layer("encoder"),
                          params.dann_feature_layer)
  feature_dim = int(tap.output_shape[0][-1])
  mapping, map_dim = conditional_map(feature_dim, task.pair.num_classes,
                                     params.cdan_random_dim,
                                     task.model_config.seed)
  discriminator = build_domain_classifier(map_dim, params.cdan_hidden,
                                          task.model_config.seed)

  def loss(features, logits, n_s, lambda_):
    probs = tf.stop_gradient(tf.nn.softmax(logits))
    mapped = mapping(gradient_reversal(features, lambda_), probs)
    domain_logits = discriminator(mapped, training=True)[:, 0]
    labels = losses.domain_labels(tf.shape(features)[0], n_s)
    weights = (losses.entropy_weights(probs, n_s) if params.cdan_entropy
               else None)
    return (losses.weighted_domain_loss(domain_logits, labels, weights),
            losses.correct_domains(domain_logits, labels))

  result = train_adversarially(
      task, "cdan", params, model,
      Adversary(tap, {"domain_classifier": discriminator}, loss,
                params.cdan_weight))
  result.details.update({
      "cdan": dataclasses.asdict(params),
      "cdan_map": ("full" if map_dim == feature_dim * task.pair.num_classes
                   else "randomized"),
      "cdan_map_dim": map_dim})
  return result
