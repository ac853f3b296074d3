"""The adaptation-method contract: configs, the task a method gets, its result.

A method is a function registered in `fedclf.registry.ADAPTATION_METHODS`
that trains a classifier for the target domain:

    from fedclf.adapt import AdaptationResult, AdaptationTask
    from fedclf.registry import ADAPTATION_METHODS

    @ADAPTATION_METHODS.register("my_method")
    def my_method(task: AdaptationTask) -> AdaptationResult: ...

The task carries the aligned `DomainPair` (labelled source, target whose
training labels only `target_oracle` and `finetune` may read), the zoo
model to build and the training configs; `fedclf.adapt.centralized_run` then scores the
returned model on both domains' test sets.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from fedclf.adapt.domains import DomainPair
from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.models import build_classifier
from fedclf.models import ModelConfig
from fedclf.results import RunRecorder
from fedclf.train.loop import TrainConfig
from fedclf.train.optimizers import OptimizerConfig

# How inputs are standardized (AdaptConfig.normalization):
#   source: both domains with the source training statistics, so that
#     normalization alone never adapts;
#   pooled: both with the statistics of the two training sets pooled with
#     equal weight;
#   per_domain: each domain with its own training statistics (the target's
#     need no labels). On MNIST -> MNIST-M the source statistics put
#     MNIST-M's bright photo backgrounds several standard deviations off
#     and DANN collapses to one class; its own statistics centre it.
NORMALIZATIONS = ("source", "pooled", "per_domain")


@dataclasses.dataclass(frozen=True)
class DannConfig:
  """DANN (Ganin et al. 2016) settings.

  Attributes:
    domain_hidden: hidden widths of the domain classifier MLP on the
      encoder features (ReLU), before its single logit. ADDA's
      discriminator for digits has two layers of 500.
    domain_weight: the largest adaptation factor lambda; the schedule
      2 / (1 + exp(-gamma p)) - 1 (p: training progress) is scaled by it.
    gamma: the schedule's steepness (10 in the paper).
    anneal_lr: the paper's learning-rate annealing
      lr_p = lr / (1 + alpha p)^beta, replacing the optimizer's schedule.
    alpha, beta: the annealing constants (10 and 0.75 in the paper).
    feature_layer: the encoder layer whose output the domain classifier
      reads through the gradient-reversal layer ("" = the encoder's output,
      the head's input). The paper attaches it after the convolutions
      (e.g. the zoo models' "flatten"), which leaves the dense layers above
      to the labels alone.
  """
  domain_hidden: Tuple[int, ...] = (500, 500)
  domain_weight: float = 1.0
  gamma: float = 10.0
  anneal_lr: bool = False
  alpha: float = 10.0
  beta: float = 0.75
  feature_layer: str = ""

  def validate(self) -> None:
    if any(int(w) < 1 for w in self.domain_hidden):
      raise UserError(f"dann domain classifier widths must be >= 1, got "
                      f"{list(self.domain_hidden)}")
    for name in ("domain_weight", "gamma", "alpha", "beta"):
      value = getattr(self, name)
      if not math.isfinite(value) or value < 0:
        raise UserError(f"dann {name} must be >= 0, got {value}")


@dataclasses.dataclass(frozen=True)
class AdaptConfig:
  """Training settings shared by the methods.

  Attributes:
    train: the main training run (source training; the oracle's target
      training; DANN's joint training, which reads epochs, batch_size,
      optimizer, label_smoothing, checkpoint_every, eval_batch_size and
      seed, and takes batch_size source plus batch_size target images
      per step).
    finetune: `finetune`'s second stage on the few labelled target
      examples (its optimizer is usually a smaller learning rate).
    target_labels_per_class: labelled target examples per class for
      `finetune` (seeded choice from the target training set).
    dann: DANN's settings.
    eval_every: methods with their own loop (dann) log the target test
      accuracy every this many epochs (0 = only at the end). It is a
      learning curve only: no method selects a model on target labels.
    normalization: how each domain's inputs are standardized, one of
      `NORMALIZATIONS` (see there); every method but the oracle follows it.
  """
  train: TrainConfig = TrainConfig(
      epochs=10, batch_size=64,
      optimizer=OptimizerConfig(name="momentum", learning_rate=0.01))
  finetune: TrainConfig = TrainConfig(
      epochs=20, batch_size=32,
      optimizer=OptimizerConfig(name="momentum", learning_rate=0.001))
  target_labels_per_class: int = 10
  dann: DannConfig = DannConfig()
  eval_every: int = 1
  normalization: str = "per_domain"

  def validate(self) -> None:
    if self.normalization not in NORMALIZATIONS:
      raise UserError(f"unknown normalization {self.normalization!r}; "
                      f"choose one of: {', '.join(NORMALIZATIONS)}")
    self.train.validate()
    self.finetune.validate()
    self.dann.validate()
    if self.target_labels_per_class < 0:
      raise UserError(f"target_labels_per_class must be >= 0, got "
                      f"{self.target_labels_per_class}")
    if self.eval_every < 0:
      raise UserError(f"eval_every must be >= 0, got {self.eval_every}")
    optimizer = self.train.optimizer
    if self.dann.anneal_lr and (optimizer.schedule != "constant" or
                                optimizer.warmup_epochs):
      raise UserError("dann's lr annealing replaces the lr schedule; use "
                      "the constant schedule without warm-up with it")


@dataclasses.dataclass(frozen=True)
class DomainNormalizations:
  """The input statistics applied to each domain's images."""
  source: Normalization
  target: Normalization


def pooled_normalization(image_sets: Sequence[np.ndarray]) -> Normalization:
  """Per-channel statistics of the image sets mixed with equal weight (a
  large source does not outweigh a small target)."""
  means = np.stack([x.mean(axis=(0, 1, 2)) for x in image_sets])
  variances = np.stack([x.var(axis=(0, 1, 2)) for x in image_sets])
  mean = means.mean(axis=0)
  # The mixture's variance: mean within-set variance plus the spread of the
  # set means.
  variance = (variances + (means - mean) ** 2).mean(axis=0)
  std = np.maximum(np.sqrt(variance), 1e-6)
  return Normalization(tuple(float(m) for m in mean),
                       tuple(float(v) for v in std))


@dataclasses.dataclass
class AdaptationTask:
  """Everything a method needs; it trains and returns an `AdaptationResult`.

  Attributes:
    pair: the aligned domains.
    model_name, model_config: the zoo model (`fedclf.models`).
    config: the training settings.
    recorder: where methods log per-epoch metrics (None: nowhere).
    checkpoint_dir: root of the method's checkpoints (None: none); each
      training stage uses its own subfolder (`checkpoint_subdir`).
    resume: continue from the checkpoints there.
  """
  pair: DomainPair
  model_name: str
  model_config: ModelConfig
  config: AdaptConfig
  recorder: Optional[RunRecorder] = None
  checkpoint_dir: Optional[str] = None
  resume: bool = False

  def build_classifier(self) -> tf.keras.Model:
    """A fresh zoo classifier (image -> logits; nested layers "encoder" and
    "head"), with the same initial weights on every call."""
    return build_classifier(self.model_name, self.pair.input_shape,
                            self.pair.num_classes, self.model_config)

  def checkpoint_subdir(self, stage: str) -> Optional[str]:
    return (os.path.join(self.checkpoint_dir, stage)
            if self.checkpoint_dir else None)

  def normalizations(self) -> DomainNormalizations:
    """The (source, target) input statistics `config.normalization` asks
    for, from the training images (target labels are never read). Every
    method that trains on the source uses them, so source_only gets exactly
    the inputs dann gets."""
    source = self.pair.source.x_train
    target = self.pair.target.x_train
    kind = self.config.normalization
    if kind == "per_domain":
      return DomainNormalizations(Normalization.from_images(source),
                                  Normalization.from_images(target))
    shared = (pooled_normalization((source, target)) if kind == "pooled"
              else Normalization.from_images(source))
    return DomainNormalizations(shared, shared)


@dataclasses.dataclass
class AdaptationResult:
  """A method's trained classifier and what it wants in the summary.

  Attributes:
    model: image -> logits for the pair's classes.
    normalizations: the input statistics of each domain (the evaluation
      applies them to that domain's test set).
    epochs_run: epochs of the main training stage.
    train_seconds: training time (all stages).
    examples_per_second: training throughput.
    details: method-specific summary entries (JSON-serializable).
  """
  model: tf.keras.Model
  normalizations: DomainNormalizations
  epochs_run: int
  train_seconds: float
  examples_per_second: float
  details: Dict[str, Any] = dataclasses.field(default_factory=dict)


def few_shot_indices(labels: np.ndarray, per_class: int, num_classes: int,
                     seed: int) -> np.ndarray:
  """Sorted indices of `per_class` seeded examples of each class.

  A class with fewer examples contributes all it has.

  Raises:
    UserError: `per_class` < 1 or no example at all.
  """
  if per_class < 1:
    raise UserError(f"target_labels_per_class must be >= 1, got {per_class}")
  labels = np.asarray(labels)
  order = np.random.default_rng(seed).permutation(len(labels))
  chosen = [order[labels[order] == c][:per_class] for c in range(num_classes)]
  chosen = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
  if not len(chosen):
    raise UserError("no labelled target example to choose from")
  return np.sort(chosen).astype(np.int64)
