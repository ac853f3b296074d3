"""Target oracle: train on the labelled target training set.

The upper bound: what the model reaches when target labels are free. It
never sees the source, so it normalizes the target with the target's
statistics whatever `AdaptConfig.normalization` says (and the source, which
it is only scored on, with the source's under `per_domain`).
"""

from __future__ import annotations

from fedclf.adapt.task import AdaptationResult
from fedclf.adapt.task import AdaptationTask
from fedclf.adapt.task import DomainNormalizations
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
      checkpoint_dir=task.checkpoint_subdir("oracle"), resume=task.resume,
      setting=task.setting)
  source = (task.normalizations().source
            if task.config.normalization == "per_domain" else normalization)
  return AdaptationResult(model, DomainNormalizations(source, normalization),
                          result.epochs_run,
                          result.train_seconds, result.examples_per_second,
                          {"target_train_labels": int(len(target.y_train))})
