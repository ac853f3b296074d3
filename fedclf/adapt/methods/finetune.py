"""Fine-tuning: train on the source, then on a few labelled target examples.

Semi-supervised adaptation's simplest baseline: the source model (exactly
`source_only`'s, same seed) is fine-tuned, all layers, on
`target_labels_per_class` seeded target training examples per class
(`FinetuneParams`). Both stages run the shared supervised loop, each with
its own checkpoints, so `--resume` continues either.
"""

from __future__ import annotations

import dataclasses

from absl import logging

from fedclf.adapt.task import AdaptationResult
from fedclf.adapt.task import AdaptationTask
from fedclf.adapt.task import few_shot_indices
from fedclf.adapt.methods.source_only import train_on_source
from fedclf.errors import UserError
from fedclf.registry import ADAPTATION_METHODS
from fedclf.train.loop import evaluate_classifier
from fedclf.train.loop import train_classifier
from fedclf.train.loop import TrainConfig
from fedclf.train.optimizers import OptimizerConfig


@dataclasses.dataclass(frozen=True)
class FinetuneParams:
  """`finetune`'s hyper-parameters; each is a flag of its name.

  Attributes:
    target_labels_per_class: labelled target examples per class (seeded
      choice from the target training set).
    finetune_epochs, finetune_lr, finetune_batch_size: the second stage's
      training on them; the rest follows `AdaptConfig.train` (see
      `train_config`).
  """
  target_labels_per_class: int = dataclasses.field(
      default=10, metadata={"help": "Labelled target examples per class."})
  finetune_epochs: int = dataclasses.field(
      default=20, metadata={"help": "Epochs on them."})
  finetune_lr: float = dataclasses.field(
      default=0.001,
      metadata={"help": "Learning rate (same optimizer as --optimizer, "
                        "constant)."})
  finetune_batch_size: int = dataclasses.field(
      default=32, metadata={"help": "Batch size."})

  def validate(self) -> None:
    if self.target_labels_per_class < 1:
      raise UserError(f"finetune needs target_labels_per_class >= 1, got "
                      f"{self.target_labels_per_class}")

  def validate_training(self, train: TrainConfig) -> None:
    # Epochs, batch size and learning rate, checked as any training run's.
    self.train_config(train).validate()

  def train_config(self, train: TrainConfig) -> TrainConfig:
    """The second stage's training: the main run's optimizer (momentum,
    weight decay) at `finetune_lr` on the constant schedule, its label
    smoothing, checkpoints and seed, with these epochs and batch size."""
    return TrainConfig(
        epochs=self.finetune_epochs, batch_size=self.finetune_batch_size,
        optimizer=OptimizerConfig(
            name=train.optimizer.name, learning_rate=self.finetune_lr,
            momentum=train.optimizer.momentum,
            weight_decay=train.optimizer.weight_decay),
        label_smoothing=train.label_smoothing,
        checkpoint_every=train.checkpoint_every,
        eval_batch_size=train.eval_batch_size, seed=train.seed)


@ADAPTATION_METHODS.register("finetune", params=FinetuneParams)
def finetune(task: AdaptationTask) -> AdaptationResult:
  config = task.config
  params: FinetuneParams = task.method_params("finetune")
  target = task.pair.target
  # Chosen before any training, so a bad setting fails fast.
  chosen = few_shot_indices(target.y_train, params.target_labels_per_class,
                            task.pair.num_classes, config.train.seed)
  model, normalizations, source_result = train_on_source(task, "source_")
  before = evaluate_classifier(model, (target.x_test, target.y_test),
                               normalizations.target, task.pair.num_classes,
                               batch_size=config.train.eval_batch_size)
  logging.info("source model: target test accuracy %.4f; fine-tuning on %d "
               "labelled target examples", before["accuracy"], len(chosen))
  tuned = train_classifier(
      model, (target.x_train[chosen], target.y_train[chosen]), None,
      normalizations.target, task.pair.num_classes,
      params.train_config(config.train), task.recorder,
      checkpoint_dir=task.checkpoint_subdir("finetune"), resume=task.resume,
      log_prefix="finetune_", setting=task.setting)
  seconds = source_result.train_seconds + tuned.train_seconds
  examples = (source_result.examples_per_second *
              source_result.train_seconds +
              tuned.examples_per_second * tuned.train_seconds)
  return AdaptationResult(
      model, normalizations, source_result.epochs_run, seconds,
      examples / max(seconds, 1e-9),
      {"target_labelled_examples": int(len(chosen)),
       "target_labels_per_class": params.target_labels_per_class,
       "finetune_epochs_run": tuned.epochs_run,
       # The source-only model's score, for the gain of fine-tuning.
       "source_model_target_accuracy": before["accuracy"]})
