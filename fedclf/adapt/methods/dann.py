"""DANN: domain-adversarial training (Ganin et al. 2016, JMLR 17(59)).

The zoo encoder feeds two heads: the zoo classifier head, trained on the
labelled source, and a domain classifier (an MLP, one logit: source or
target), trained on source and unlabelled target features that pass through
a gradient-reversal layer. One backward pass of

    L = CE(head(f(x_s)), y_s) + BCE(domain(GRL_lambda(f([x_s, x_t]))), d)

teaches the domain classifier to separate the domains and the encoder, via
the reversed gradient, to make them inseparable while staying
discriminative for the labels. The loop, lambda's schedule
2 / (1 + exp(-10 p)) - 1 and the paper's learning-rate annealing
lr / (1 + 10 p)^0.75 are `fedclf.adapt.adversarial_training`'s, shared
with cdan and mdd.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import tensorflow as tf

from fedclf.adapt.adversarial_training import AdversarialSchedule
from fedclf.adapt.adversarial_training import Adversary
from fedclf.adapt.adversarial_training import build_domain_classifier
from fedclf.adapt.adversarial_training import build_feature_tap
from fedclf.adapt.adversarial_training import check_non_negative
from fedclf.adapt.adversarial_training import feature_layer_field
from fedclf.adapt.adversarial_training import train_adversarially
from fedclf.adapt.alignment_losses import correct_domains
from fedclf.adapt.alignment_losses import domain_labels
from fedclf.adapt.alignment_losses import weighted_domain_loss
from fedclf.adapt.grl import gradient_reversal
from fedclf.adapt.task import AdaptationResult
from fedclf.adapt.task import AdaptationTask
from fedclf.errors import UserError
from fedclf.registry import ADAPTATION_METHODS

@dataclasses.dataclass(frozen=True)
class DannParams(AdversarialSchedule):
  """DANN's hyper-parameters (Ganin et al. 2016); each is a flag of its
  name (the schedule's, `AdversarialSchedule`, shared with cdan and mdd).
  `fedclf.adapt.unlabelled_target_clients` builds every federated
  method's model from them too, and its `dann` reads the lambda schedule.

  Attributes:
    dann_hidden: hidden widths of the domain classifier MLP (ReLU), before
      its single logit. ADDA's discriminator for digits has two layers of
      500; Ganin et al.'s MNIST-M one a single layer of 100.
    dann_weight: the largest adaptation factor lambda; the schedule
      2 / (1 + exp(-gamma p)) - 1 (p: training progress) is scaled by it.
    dann_feature_layer: the encoder layer whose output the domain
      classifier reads through the gradient-reversal layer ("" = the
      encoder's output, the head's input). The paper attaches it after the
      convolutions (the zoo models' "flatten"); on LeNet-5, whose two small
      convolutions cannot make their 400 features domain-invariant, the
      domain classifier then wins (domain accuracy 0.97-0.99) and MNIST ->
      USPS falls from 0.81 to 0.56-0.60 (see the diagnosis in
      results/domain_adaptation/README.md).
  """
  dann_hidden: Tuple[int, ...] = dataclasses.field(
      default=(500, 500),
      metadata={"help": "Hidden widths of the domain classifier MLP."})
  dann_weight: float = dataclasses.field(
      default=1.0,
      metadata={"help": "Largest adaptation factor lambda (the schedule "
                        "2/(1+exp(-gamma p))-1 is scaled by it)."})
  dann_feature_layer: str = feature_layer_field()

  def validate(self) -> None:
    super().validate()
    if any(w < 1 for w in self.dann_hidden):
      raise UserError(f"dann domain classifier widths must be >= 1, got "
                      f"{list(self.dann_hidden)}")
    check_non_negative("dann_weight", self.dann_weight)


@dataclasses.dataclass
class DannModels:
  """The zoo classifier split for DANN, and the domain classifier.

  `tap` maps images to (domain-classifier features, encoder features) in
  one pass (see `build_feature_tap`); `model` is encoder then head.
  """
  model: tf.keras.Model
  head: tf.keras.Model
  tap: tf.keras.Model
  domain_classifier: tf.keras.Model


def build_dann_models(task: AdaptationTask, params: DannParams
                      ) -> DannModels:
  model = task.build_classifier()
  tap = build_feature_tap(model.get_layer("encoder"),
                          params.dann_feature_layer)
  domain_classifier = build_domain_classifier(
      int(tap.output_shape[0][-1]), params.dann_hidden,
      task.model_config.seed)
  return DannModels(model, model.get_layer("head"), tap, domain_classifier)


def domain_loss_and_correct(domain_classifier: tf.keras.Model,
                            features: tf.Tensor, labels: tf.Tensor,
                            lambda_: tf.Tensor):
  """The domain classifier's mean binary cross-entropy on `features` seen
  through the gradient-reversal layer, and its count of correct domains.

  `labels` are floats: 0 for source, 1 for target examples.
  """
  logits = domain_classifier(gradient_reversal(features, lambda_),
                             training=True)[:, 0]
  return (weighted_domain_loss(logits, labels),
          correct_domains(logits, labels))


@ADAPTATION_METHODS.register("dann", params=DannParams)
def dann(task: AdaptationTask) -> AdaptationResult:
  params: DannParams = task.method_params("dann")
  models = build_dann_models(task, params)
  domain_classifier = models.domain_classifier

  def loss(features, logits, n_s, lambda_):
    del logits  # DANN's domain classifier sees the features alone.
    labels = domain_labels(tf.shape(features)[0], n_s)
    return domain_loss_and_correct(domain_classifier, features, labels,
                                   lambda_)

  result = train_adversarially(
      task, "dann", params, models.model,
      Adversary(models.tap, {"domain_classifier": domain_classifier}, loss,
                params.dann_weight))
  result.details.update({
      "dann": dataclasses.asdict(params),
      "domain_classifier_parameters": int(domain_classifier.count_params())})
  return result
