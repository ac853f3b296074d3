"""Source only: train on the labelled source, apply to the target as is.

The lower bound every adaptation method has to beat.
"""

from __future__ import annotations

from fedclf.adapt.task import AdaptationResult
from fedclf.adapt.task import AdaptationTask
from fedclf.registry import ADAPTATION_METHODS
from fedclf.train.loop import train_classifier


def train_on_source(task: AdaptationTask, log_prefix: str = ""):
  """The shared supervised loop on the source training set.

  Returns:
    (model, DomainNormalizations, TrainResult).
  """
  model = task.build_classifier()
  normalizations = task.normalizations()
  source = task.pair.source
  result = train_classifier(
      model, (source.x_train, source.y_train), None, normalizations.source,
      task.pair.num_classes, task.config.train, task.recorder,
      checkpoint_dir=task.checkpoint_subdir("source"), resume=task.resume,
      log_prefix=log_prefix, setting=task.setting)
  return model, normalizations, result


@ADAPTATION_METHODS.register("source_only")
def source_only(task: AdaptationTask) -> AdaptationResult:
  model, normalizations, result = train_on_source(task)
  return AdaptationResult(model, normalizations, result.epochs_run,
                          result.train_seconds, result.examples_per_second)
