"""The adaptation-method contract: configs, the task a method gets, its result.

A method is a function registered in `fedclf.registry.ADAPTATION_METHODS`
that trains a classifier for the target domain:

    from fedclf.adapt import AdaptationResult, AdaptationTask
    from fedclf.registry import ADAPTATION_METHODS

    @ADAPTATION_METHODS.register("my_method")
    def my_method(task: AdaptationTask) -> AdaptationResult: ...

The task carries the aligned `DomainPair` (labelled source, target whose
training labels only `target_oracle` and `finetune` may read), the zoo
model to build and the training configs; `fedclf.adapt.centralized_run`
then scores the returned model on both domains' test sets.

A method with hyper-parameters of its own declares them as a frozen
dataclass beside it and registers it (`fedclf.plugin_config`):

    @ADAPTATION_METHODS.register("my_method", params=MyParams)
    def my_method(task: AdaptationTask) -> AdaptationResult:
      params = task.method_params("my_method")

The binary turns each field into a flag of its name (`--dann_weight`). A
params class may also define `validate_training(train: TrainConfig)`,
which `AdaptConfig.validate` calls to check the params against the shared
training settings (DANN's lr annealing needs the constant schedule).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from fedclf.adapt.domains import DomainPair
from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.models import ModelConfig
from fedclf.models.pretrained import build_source_classifier
from fedclf.models.pretrained import FeatureStatistics
from fedclf.models.pretrained import SourceEncoder
from fedclf.plugin_config import resolve_params
from fedclf.registry import ADAPTATION_METHODS
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

# Every method returns the model after its last training epoch: no target
# label is read for training (but by target_oracle and finetune) or for
# model selection; the target test accuracy logged every `eval_every`
# epochs is a learning curve only. Summaries record it.
MODEL_SELECTION = "last_epoch"


@dataclasses.dataclass(frozen=True)
class AdaptConfig:
  """Training settings shared by the methods, and the chosen one's own.

  Attributes:
    train: the main training run (source training; the oracle's target
      training; DANN's joint training, which reads epochs, batch_size,
      optimizer, label_smoothing, checkpoint_every, eval_batch_size and
      seed, and takes batch_size source plus batch_size target images
      per step; `finetune`'s second stage follows its optimizer).
    params: the method's own hyper-parameters, the dataclass it registered
      (`DannParams`, `FinetuneParams`), or None for its defaults;
      `run_adaptation` records and runs them resolved, never None.
    eval_every: methods with their own loop (dann) log the target test
      accuracy every this many epochs (0 = only at the end). It is a
      learning curve only: no method selects a model on target labels.
    normalization: how each domain's inputs are standardized, one of
      `NORMALIZATIONS` (see there); every method but the oracle follows it.
  """
  train: TrainConfig = TrainConfig(
      epochs=10, batch_size=64,
      optimizer=OptimizerConfig(name="momentum", learning_rate=0.01))
  params: Any = None
  eval_every: int = 1
  normalization: str = "per_domain"

  def validate(self) -> None:
    """Checks the shared settings, and the params against them where the
    params class asks to (see `validate_training` in the module doc); the
    params on their own are checked against the method by
    `AdaptRunConfig.validate`, which knows the method."""
    if self.normalization not in NORMALIZATIONS:
      raise UserError(f"unknown normalization {self.normalization!r}; "
                      f"choose one of: {', '.join(NORMALIZATIONS)}")
    self.train.validate()
    if self.eval_every < 0:
      raise UserError(f"eval_every must be >= 0, got {self.eval_every}")
    validate_training = getattr(self.params, "validate_training", None)
    if validate_training is not None:
      validate_training(self.train)


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
    setting: the run's setting, stored in and checked against the
      checkpoints (see `fedclf.train.epoch_driver.EpochDriverConfig`).
    source: the finished run's encoder every classifier starts from (None:
      random initialisation); see `fedclf.models.pretrained`.
    feature_stats: that encoder's feature statistics for the head's
      standardization (`ModelConfig.standardize_features`), or None.
  """
  pair: DomainPair
  model_name: str
  model_config: ModelConfig
  config: AdaptConfig
  recorder: Optional[RunRecorder] = None
  checkpoint_dir: Optional[str] = None
  resume: bool = False
  setting: Optional[Mapping[str, Any]] = None
  source: Optional[SourceEncoder] = None
  feature_stats: Optional[FeatureStatistics] = None

  def build_classifier(self) -> tf.keras.Model:
    """A fresh zoo classifier (image -> logits; nested layers "encoder" and
    "head"), with the same initial weights on every call (the encoder's
    from `source` when there is one)."""
    return build_source_classifier(self.model_name, self.pair.input_shape,
                                   self.pair.num_classes, self.model_config,
                                   self.source, self.feature_stats)

  def method_params(self, method: str) -> Any:
    """`config.params` as the adaptation method `method` declares them:
    its defaults when None; a UserError when they are another method's
    or invalid (a method may be called on a hand-built task)."""
    return resolve_params(ADAPTATION_METHODS, method, self.config.params)

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
