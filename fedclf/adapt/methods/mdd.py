"""MDD: margin disparity discrepancy (Zhang et al. 2019, ICML).

A discrepancy method that fits DANN's one-backward-pass loop: beside the
zoo head f, an auxiliary classifier f' of the same kind (on the encoder
output, through the gradient-reversal layer) is trained to agree with f's
predictions on the source and to disagree with them on the target
(`fedclf.adapt.alignment_losses.mdd_disparity`, margin gamma on the source
term); the encoder, through the reversed gradient, to make f' fail, which
shrinks the disparity between the domains as f sees them. Training loop,
schedules and epoch: `fedclf.adapt.adversarial_training`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence, Tuple

import tensorflow as tf

from fedclf.adapt import alignment_losses as losses
from fedclf.adapt.adversarial_training import AdversarialSchedule
from fedclf.adapt.adversarial_training import Adversary
from fedclf.adapt.adversarial_training import build_adversary_mlp
from fedclf.adapt.adversarial_training import build_feature_tap
from fedclf.adapt.adversarial_training import check_non_negative
from fedclf.adapt.adversarial_training import train_adversarially
from fedclf.adapt.grl import gradient_reversal
from fedclf.adapt.task import AdaptationResult
from fedclf.adapt.task import AdaptationTask
from fedclf.errors import UserError
from fedclf.registry import ADAPTATION_METHODS

# Offsets the auxiliary classifier's initialiser seeds from the model's.
_AUXILIARY_SEED_OFFSET = 104_723


@dataclasses.dataclass(frozen=True)
class MddParams(AdversarialSchedule):
  """MDD's hyper-parameters; each is a flag of its name (the schedule's
  are shared with dann and cdan).

  Attributes:
    mdd_margin: gamma, the weight of the source agreement (the paper: 2-4;
      larger gives a tighter bound but harder optimisation).
    mdd_weight: the largest lambda, the scale of the reversed gradient
      that reaches the encoder (the auxiliary classifier itself always
      learns at full rate). LeNet-5's ReLU features are unbounded (the
      reference implementations put a batch-normalized bottleneck there):
      the encoder then inflates the source term without end, and MNIST ->
      USPS diverged at lambda 0.06 with --mdd_weight=0.1; 0.01 trains.
    mdd_hidden: hidden widths of the auxiliary classifier (ReLU); () =
      linear, like the zoo heads.
  """
  mdd_margin: float = dataclasses.field(
      default=4.0, metadata={"help": "MDD's margin gamma."})
  mdd_weight: float = dataclasses.field(
      default=0.01,
      metadata={"help": "Largest adaptation factor lambda of mdd."})
  mdd_hidden: Tuple[int, ...] = dataclasses.field(
      default=(),
      metadata={"help": "Hidden widths of MDD's auxiliary classifier "
                        "(empty: linear, like the zoo heads)."})

  def validate(self) -> None:
    super().validate()
    if any(w < 1 for w in self.mdd_hidden):
      raise UserError(f"mdd auxiliary classifier widths must be >= 1, got "
                      f"{list(self.mdd_hidden)}")
    if not math.isfinite(self.mdd_margin) or self.mdd_margin <= 0:
      raise UserError(f"mdd_margin must be > 0, got {self.mdd_margin}")
    check_non_negative("mdd_weight", self.mdd_weight)


def build_auxiliary_classifier(feature_dim: int, num_classes: int,
                               hidden: Sequence[int],
                               seed: int) -> tf.keras.Model:
  """features -> ReLU MLP (none when `hidden` is empty) -> class logits."""
  return build_adversary_mlp(feature_dim, hidden, num_classes,
                             seed + _AUXILIARY_SEED_OFFSET, "logits",
                             "auxiliary_classifier")


@ADAPTATION_METHODS.register("mdd", params=MddParams)
def mdd(task: AdaptationTask) -> AdaptationResult:
  params: MddParams = task.method_params("mdd")
  model = task.build_classifier()
  # f' reads what f reads: the encoder output.
  tap = build_feature_tap(model.get_layer("encoder"), "")
  auxiliary = build_auxiliary_classifier(
      int(tap.output_shape[0][-1]), task.pair.num_classes, params.mdd_hidden,
      task.model_config.seed)

  def loss(features, logits, n_s, lambda_):
    adversary_logits = auxiliary(gradient_reversal(features, lambda_),
                                 training=True)
    disparity = losses.mdd_disparity(logits[:n_s], logits[n_s:],
                                     adversary_logits[:n_s],
                                     adversary_logits[n_s:],
                                     params.mdd_margin)
    agree = tf.reduce_sum(tf.cast(tf.equal(
        tf.argmax(adversary_logits, -1), tf.argmax(logits, -1)), tf.float32))
    return disparity, agree

  result = train_adversarially(
      task, "mdd", params, model,
      Adversary(tap, {"auxiliary_classifier": auxiliary}, loss,
                params.mdd_weight, metric="auxiliary_agreement"))
  result.details["mdd"] = dataclasses.asdict(params)
  return result
