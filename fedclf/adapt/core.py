"""The adaptation-method contract: configs, the task a method gets, its result.

A method is a function registered in `fedclf.registry.ADAPTATION_METHODS`
that trains a classifier for the target domain:

    from fedclf.adapt import AdaptationResult, AdaptationTask
    from fedclf.registry import ADAPTATION_METHODS

    @ADAPTATION_METHODS.register("my_method")
    def my_method(task: AdaptationTask) -> AdaptationResult: ...

The task carries the aligned `DomainPair` (labelled source, target whose
training labels only `target_oracle` and `finetune` may read), the zoo
model to build and the training configs; `fedclf.adapt.run` then scores the
returned model on both domains' test sets.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Dict, Optional, Tuple

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
  """
  domain_hidden: Tuple[int, ...] = (500, 500)
  domain_weight: float = 1.0
  gamma: float = 10.0
  anneal_lr: bool = False
  alpha: float = 10.0
  beta: float = 0.75

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

  def validate(self) -> None:
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

  def source_normalization(self) -> Normalization:
    """Source training statistics: every method that trains on the source
    normalizes both domains with them, so that normalization alone never
    adapts (source_only gets exactly what dann gets)."""
    return Normalization.from_images(self.pair.source.x_train)


@dataclasses.dataclass
class AdaptationResult:
  """A method's trained classifier and what it wants in the summary.

  Attributes:
    model: image -> logits for the pair's classes.
    normalization: the input statistics the model was trained with (the
      evaluation applies them to both domains).
    epochs_run: epochs of the main training stage.
    train_seconds: training time (all stages).
    examples_per_second: training throughput.
    details: method-specific summary entries (JSON-serializable).
  """
  model: tf.keras.Model
  normalization: Normalization
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
