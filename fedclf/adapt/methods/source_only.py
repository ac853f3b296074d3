"""Source only: train on the labelled source, apply to the target as is.

The lower bound every adaptation method has to beat.
"""

from __future__ import annotations

from fedclf.adapt.core import AdaptationResult
from fedclf.adapt.core import AdaptationTask
from fedclf.registry import ADAPTATION_METHODS
from fedclf.train.loop import train_classifier


def train_on_source(task: AdaptationTask, log_prefix: str = ""):
  """The shared supervised loop on the source training set.

  Returns:
    (model, normalization, TrainResult).
  """
  model = task.build_classifier()
  normalization = task.source_normalization()
  source = task.pair.source
  result = train_classifier(
      model, (source.x_train, source.y_train), None, normalization,
      task.pair.num_classes, task.config.train, task.recorder,
      checkpoint_dir=task.checkpoint_subdir("source"), resume=task.resume,
      log_prefix=log_prefix)
  return model, normalization, result


@ADAPTATION_METHODS.register("source_only")
def source_only(task: AdaptationTask) -> AdaptationResult:
  model, normalization, result = train_on_source(task)
  return AdaptationResult(model, normalization, result.epochs_run,
                          result.train_seconds, result.examples_per_second)
