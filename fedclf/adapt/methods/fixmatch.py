"""FixMatch-style self-training (Sohn et al. 2020) for domain adaptation.

Each step takes `batch_size` labelled source images and `fixmatch_ratio`
(mu) times as many unlabelled target images, and minimizes

    L = CE(f(weak(x_s)), y_s) + lambda_u * L_u(target)

where L_u is the masked pseudo-label loss of `fedclf.adapt.consistency`:
the model's own confident predictions (probability >= tau) on weakly
augmented target images teach its predictions on strongly augmented views
of them. By default the weak-view probabilities are first aligned with the
source's class frequencies (ReMixMatch's distribution alignment; see
`FixMatchParams.fixmatch_align`). Source, weak and strong target batches go through the model in
one pass (as the paper does, so normalization layers see the mixed
batch). An optional source-only warm-up (`fixmatch_warmup_epochs`) lets
the pseudo-labels start from a source model rather than from chance.

Target labels are never read: the model kept is the last epoch's (the
target test accuracy logged per epoch is a learning curve only).

Its own epoch, run by `fedclf.train.epoch_driver.EpochDriver` like `dann`:
batch orders derive from (seed, epoch) and the augmentations from (epoch
seed, step), so `--resume` replays the uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from fedclf.adapt.consistency import masked_pseudo_label_loss
from fedclf.adapt.consistency import standardized_views
from fedclf.adapt.adversarial_training import epoch_order
from fedclf.adapt.adversarial_training import target_curve
from fedclf.adapt.adversarial_training import training_data
from fedclf.adapt.task import AdaptationResult
from fedclf.adapt.task import AdaptationTask
from fedclf.adapt.task import DomainNormalizations
from fedclf.errors import UserError
from fedclf.registry import ADAPTATION_METHODS
from fedclf.results.tensorboard_log import run_tensorboard_dir
from fedclf.train.epoch_driver import EpochDriver
from fedclf.train.epoch_driver import EpochDriverConfig
from fedclf.train.loop import classification_loss
from fedclf.train.optimizers import build_optimizer

# Keeps FixMatch's batch orders apart from DANN's and the supervised loop's
# for the same seed.
FIXMATCH_SEED_OFFSET = 786_433


@dataclasses.dataclass(frozen=True)
class FixMatchParams:
  """FixMatch's hyper-parameters; each is a flag of its name.

  Attributes:
    fixmatch_threshold: tau, the softmax probability a weak-view
      prediction needs to become a pseudo-label (0.95 in the paper).
    fixmatch_weight: lambda_u, the unlabelled loss's weight (1 in the
      paper).
    fixmatch_ratio: mu, unlabelled target images per labelled source image
      in a step (7 in the paper; each costs two forward passes).
    fixmatch_warmup_epochs: epochs of source cross-entropy alone first.
    fixmatch_align: distribution alignment (ReMixMatch): the weak-view
      probabilities are scaled by the source's class frequencies over
      their running mean before thresholding, so that the model cannot
      slide into predicting one class for the whole target (without it,
      USPS -> MNIST from a weak source model collapsed to 0.11).
  """
  fixmatch_threshold: float = dataclasses.field(
      default=0.95,
      metadata={"help": "Softmax probability a weak-view prediction needs "
                        "to become a pseudo-label (tau)."})
  fixmatch_weight: float = dataclasses.field(
      default=1.0, metadata={"help": "Weight of the unlabelled loss."})
  fixmatch_ratio: int = dataclasses.field(
      default=3,
      metadata={"help": "Unlabelled target images per source image in a "
                        "step (mu)."})
  fixmatch_warmup_epochs: int = dataclasses.field(
      default=0,
      metadata={"help": "Source-only epochs before the unlabelled loss "
                        "joins."})
  fixmatch_align: bool = dataclasses.field(
      default=True,
      metadata={"help": "Align the pseudo-label distribution with the "
                        "source's class frequencies (ReMixMatch)."})

  def validate(self) -> None:
    if not 0.0 <= self.fixmatch_threshold <= 1.0:
      raise UserError(f"fixmatch_threshold must be in [0, 1], got "
                      f"{self.fixmatch_threshold}")
    if not math.isfinite(self.fixmatch_weight) or self.fixmatch_weight < 0:
      raise UserError(f"fixmatch_weight must be >= 0, got "
                      f"{self.fixmatch_weight}")
    if self.fixmatch_ratio < 1:
      raise UserError(f"fixmatch_ratio must be >= 1, got "
                      f"{self.fixmatch_ratio}")
    if self.fixmatch_warmup_epochs < 0:
      raise UserError(f"fixmatch_warmup_epochs must be >= 0, got "
                      f"{self.fixmatch_warmup_epochs}")


# The running mean of the weak-view probabilities follows about the last
# 1 / (1 - momentum) steps.
_ALIGN_MOMENTUM = 0.99


@dataclasses.dataclass
class Alignment:
  """Distribution alignment's state: the class prior (the source's label
  frequencies) and the running mean of the target weak-view probabilities
  (a variable, checkpointed with the model)."""
  prior: tf.Tensor
  running_mean: tf.Variable

  @classmethod
  def from_labels(cls, labels: np.ndarray, num_classes: int) -> "Alignment":
    counts = np.bincount(labels, minlength=num_classes).astype(np.float32)
    prior = counts / counts.sum()
    return cls(tf.constant(prior), tf.Variable(prior, trainable=False,
                                               name="pseudo_label_mean"))

  def update(self, weak_logits: tf.Tensor) -> None:
    self.running_mean.assign(
        _ALIGN_MOMENTUM * self.running_mean + (1.0 - _ALIGN_MOMENTUM) *
        tf.reduce_mean(tf.nn.softmax(tf.stop_gradient(weak_logits)), 0))


def _train_step_fn(model: tf.keras.Model,
                   optimizer: tf.keras.optimizers.Optimizer,
                   loss_fn: Callable[..., tf.Tensor],
                   normalizations: DomainNormalizations,
                   threshold: float,
                   alignment: Optional[Alignment]) -> Callable[..., Tuple]:
  """FixMatch's compiled step: (standardized source images, labels,
  standardized target images, [2] seed, lambda_u) -> source loss,
  unlabelled loss, correct source labels, confident target images."""
  variables = model.trainable_variables

  @tf.function(reduce_retracing=True)
  def train_step(images_s, labels_s, images_t, seed, unlabelled_weight):
    seeds = tf.random.experimental.stateless_split(seed, 2)
    weak_s, _ = standardized_views(images_s, seeds[0], normalizations.source,
                                   strong=False)
    weak_t, strong_t = standardized_views(images_t, seeds[1],
                                          normalizations.target, strong=True)
    n_s, n_t = tf.shape(images_s)[0], tf.shape(images_t)[0]
    with tf.GradientTape() as tape:
      logits = model(tf.concat([weak_s, weak_t, strong_t], 0), training=True)
      logits_s = logits[:n_s]
      class_loss = loss_fn(labels_s, logits_s)
      weak_logits = logits[n_s:n_s + n_t]
      unlabelled_loss, mask = masked_pseudo_label_loss(
          weak_logits, logits[n_s + n_t:], threshold,
          None if alignment is None else (alignment.prior,
                                          alignment.running_mean))
      loss = class_loss + unlabelled_weight * unlabelled_loss
      if model.losses:
        loss += tf.add_n(model.losses)
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    if alignment is not None:
      alignment.update(weak_logits)
    correct = tf.reduce_sum(tf.cast(
        tf.equal(tf.argmax(logits_s, -1), labels_s), tf.float32))
    return class_loss, unlabelled_loss, correct, tf.reduce_sum(mask)

  return train_step


def _driver(task: AdaptationTask, model, optimizer, alignment,
            examples_per_epoch: int) -> EpochDriver:
  train_config = task.config.train
  return EpochDriver(
      EpochDriverConfig(
          epochs=train_config.epochs, seed=train_config.seed,
          seed_offset=FIXMATCH_SEED_OFFSET,
          checkpoint_dir=task.checkpoint_subdir("fixmatch"),
          checkpoint_every=train_config.checkpoint_every, resume=task.resume,
          stage="training", log_prefix="fixmatch: ",
          log_metrics=("train_loss", "train_accuracy", "unlabelled_loss",
                       "confident_fraction", "target_test_accuracy"),
          divergence_hint="lower the learning rate or --fixmatch_weight",
          examples_per_epoch=examples_per_epoch, setting=task.setting),
      {"model": model, "optimizer": optimizer,
       **({} if alignment is None else
          {"pseudo_label_mean": alignment.running_mean})})


@ADAPTATION_METHODS.register("fixmatch", params=FixMatchParams)
def fixmatch(task: AdaptationTask) -> AdaptationResult:
  train_config = task.config.train
  params: FixMatchParams = task.method_params("fixmatch")
  pair = task.pair
  normalizations, (x_source, y_source, x_target) = training_data(
      task, "fixmatch")
  batch = min(train_config.batch_size, len(y_source))
  steps_per_epoch = math.ceil(len(y_source) / batch)
  ratio = params.fixmatch_ratio
  model = task.build_classifier()
  optimizer = build_optimizer(train_config.optimizer, steps_per_epoch,
                              train_config.epochs)
  alignment = (Alignment.from_labels(y_source, pair.num_classes)
               if params.fixmatch_align else None)
  driver = _driver(task, model, optimizer, alignment,
                   (1 + ratio) * len(y_source))
  train_step = _train_step_fn(
      model, optimizer,
      classification_loss(pair.num_classes, train_config.label_smoothing),
      normalizations, params.fixmatch_threshold, alignment)

  def run_epoch(epoch: int, seed: int) -> Dict[str, float]:
    order_s, order_t = epoch_order(len(y_source), len(x_target),
                                   batch * ratio, steps_per_epoch, seed)
    weight = (0.0 if epoch <= params.fixmatch_warmup_epochs else
              params.fixmatch_weight)
    sums = np.zeros(4)
    for step in range(steps_per_epoch):
      idx_s = order_s[step * batch:(step + 1) * batch]
      start = step * batch * ratio
      idx_t = order_t[start:start + len(idx_s) * ratio]
      out = train_step(tf.constant(x_source[idx_s]),
                       tf.constant(y_source[idx_s]),
                       tf.constant(x_target[idx_t]),
                       tf.constant([seed, step], tf.int64),
                       tf.constant(weight, tf.float32))
      sums += [float(out[0]) * len(idx_s), float(out[1]) * len(idx_t),
               float(out[2]), float(out[3])]
    n_target = len(y_source) * ratio
    return {"train_loss": sums[0] / len(y_source),
            "train_accuracy": sums[2] / len(y_source),
            "unlabelled_loss": sums[1] / n_target,
            # The share of target images whose pseudo-label was used.
            "confident_fraction": sums[3] / n_target,
            "unlabelled_weight": weight}

  run = driver.run(run_epoch, target_curve(task, model, normalizations),
                   None, optimizer, task.recorder,
                   run_tensorboard_dir(task.recorder))
  last = run.history[-1] if run.history else {}
  details = {"fixmatch": dataclasses.asdict(params),
             "model_selection": "last epoch (no target labels)"}
  if "confident_fraction" in last:
    details["final_confident_fraction"] = last["confident_fraction"]
  return AdaptationResult(model, normalizations, run.epochs_run,
                          run.train_seconds, run.examples_per_second, details)
