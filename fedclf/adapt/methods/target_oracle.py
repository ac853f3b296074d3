"""Target oracle: train on the labelled target training set.

The upper bound: what the model reaches when target labels are free. It
never sees the source, so it normalizes with the target's statistics.
"""

from __future__ import annotations

from fedclf.adapt.core import AdaptationResult
from fedclf.adapt.core import AdaptationTask
from fedclf.data.preprocess import Normalization
from fedclf.registry import ADAPTATION_METHODS
from fedclf.train.loop import train_classifier


@ADAPTATION_METHODS.register("target_oracle")
def target_oracle(task: AdaptationTask) -> AdaptationResult:
  model = task.build_classifier()
  target = task.pair.target
  normalization = Normalization.from_images(target.x_train)
  result = train_classifier(
      model, (target.x_train, target.y_train), None, normalization,
      task.pair.num_classes, task.config.train, task.recorder,
      checkpoint_dir=task.checkpoint_subdir("oracle"), resume=task.resume)
  return AdaptationResult(model, normalization, result.epochs_run,
                          result.train_seconds, result.examples_per_second,
                          {"target_train_labels": int(len(target.y_train))})
