"""Fine-tuning: train on the source, then on a few labelled target examples.

Semi-supervised adaptation's simplest baseline: the source model (exactly
`source_only`'s, same seed) is fine-tuned, all layers, on
`target_labels_per_class` seeded target training examples per class with
`AdaptConfig.finetune`. Both stages run the shared supervised loop, each
with its own checkpoints, so `--resume` continues either.
"""

from __future__ import annotations

from absl import logging

from fedclf.adapt.task import AdaptationResult
from fedclf.adapt.task import AdaptationTask
from fedclf.adapt.task import few_shot_indices
from fedclf.adapt.methods.source_only import train_on_source
from fedclf.registry import ADAPTATION_METHODS
from fedclf.train.loop import evaluate_classifier
from fedclf.train.loop import train_classifier


@ADAPTATION_METHODS.register("finetune")
def finetune(task: AdaptationTask) -> AdaptationResult:
  config = task.config
  target = task.pair.target
  # Chosen before any training, so a bad setting fails fast.
  chosen = few_shot_indices(target.y_train, config.target_labels_per_class,
                            task.pair.num_classes, config.train.seed)
  model, normalizations, source_result = train_on_source(task, "source_")
  before = evaluate_classifier(model, (target.x_test, target.y_test),
                               normalizations.target, task.pair.num_classes,
                               batch_size=config.train.eval_batch_size)
  logging.info("source model: target test accuracy %.4f; fine-tuning on %d "
               "labelled target examples", before["accuracy"], len(chosen))
  tuned = train_classifier(
      model, (target.x_train[chosen], target.y_train[chosen]), None,
      normalizations.target, task.pair.num_classes, config.finetune,
      task.recorder,
      checkpoint_dir=task.checkpoint_subdir("finetune"), resume=task.resume,
      log_prefix="finetune_")
  seconds = source_result.train_seconds + tuned.train_seconds
  examples = (source_result.examples_per_second *
              source_result.train_seconds +
              tuned.examples_per_second * tuned.train_seconds)
  return AdaptationResult(
      model, normalizations, source_result.epochs_run, seconds,
      examples / max(seconds, 1e-9),
      {"target_labelled_examples": int(len(chosen)),
       "target_labels_per_class": config.target_labels_per_class,
       "finetune_epochs_run": tuned.epochs_run,
       # The source-only model's score, for the gain of fine-tuning.
       "source_model_target_accuracy": before["accuracy"]})
