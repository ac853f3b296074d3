"""The one supervised training loop (centralized baselines, probes, fine-tuning).

A plain tf.function step over per-epoch pipelines rather than `model.fit`,
run by `fedclf.train.epoch_driver.EpochDriver`: each epoch's shuffle and
augmentation seeds derive from (seed, epoch), so a run resumed from a
checkpoint replays exactly the batches the uninterrupted run would have
seen. Checkpoints hold the model, the optimizer, the epoch and the
early-stopping state.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from fedclf import metrics as metrics_lib
from fedclf.data.preprocess import AugmentConfig
from fedclf.data.preprocess import make_pipeline
from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.results import RunRecorder
from fedclf.results.tensorboard_log import run_tensorboard_dir
from fedclf.train.epoch_driver import EpochDriver
from fedclf.train.epoch_driver import EpochDriverConfig
from fedclf.train.epoch_driver import SUPERVISED_SEED_OFFSET
from fedclf.train.optimizers import build_optimizer
from fedclf.train.optimizers import OptimizerConfig

Arrays = Tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  epochs: int = 10
  batch_size: int = 64
  optimizer: OptimizerConfig = OptimizerConfig()
  label_smoothing: float = 0.0
  augment: AugmentConfig = AugmentConfig()
  early_stopping_patience: int = 0  # epochs without val improvement; 0 = off
  checkpoint_every: int = 1  # epochs; 0 = no checkpoints
  eval_batch_size: int = 512
  seed: int = 0

  def validate(self) -> None:
    if self.epochs < 1:
      raise UserError(f"epochs must be >= 1, got {self.epochs}")
    if self.batch_size < 1 or self.eval_batch_size < 1:
      raise UserError(f"batch size must be >= 1, got {self.batch_size}")
    if not 0.0 <= self.label_smoothing < 1.0:
      raise UserError("label smoothing must be in [0, 1)")
    if self.early_stopping_patience < 0 or self.checkpoint_every < 0:
      raise UserError("early_stopping_patience and checkpoint_every must be "
                      ">= 0")
    self.optimizer.validate()


@dataclasses.dataclass
class TrainResult:
  epochs_run: int
  best_epoch: int
  best_val_accuracy: Optional[float]
  stopped_early: bool
  train_seconds: float
  examples_per_second: float
  history: List[Dict[str, float]]


def classification_loss(num_classes: int,
                        label_smoothing: float) -> Callable[..., tf.Tensor]:
  """Mean cross-entropy on logits with optional label smoothing."""
  cce = tf.keras.losses.CategoricalCrossentropy(
      from_logits=True, label_smoothing=label_smoothing)

  def loss(labels, logits):
    return cce(tf.one_hot(tf.cast(labels, tf.int32), num_classes), logits)

  return loss


# One compiled inference function per model, reused across evaluations
# (a fresh tf.function per call would retrace every epoch).
_PREDICT_FNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def predict_logits(model: tf.keras.Model, x: np.ndarray,
                   normalization: Normalization,
                   batch_size: int = 512) -> np.ndarray:
  ds = make_pipeline(x, np.zeros(len(x), np.int64), batch_size, normalization,
                     cache=False)
  predict = _PREDICT_FNS.get(model)
  if predict is None:
    model_ref = weakref.ref(model)  # a strong ref here would pin the key
    predict = tf.function(
        lambda images: model_ref()(images, training=False),
        reduce_retracing=True)
    _PREDICT_FNS[model] = predict
  return np.concatenate([predict(images).numpy() for images, _ in ds])


def evaluate_classifier(model: tf.keras.Model, data: Arrays,
                        normalization: Normalization, num_classes: int,
                        class_names: Optional[List[str]] = None,
                        batch_size: int = 512) -> Dict:
  logits = predict_logits(model, data[0], normalization, batch_size)
  report = metrics_lib.classification_report(data[1], logits.argmax(-1),
                                             num_classes, class_names)
  labels = tf.one_hot(data[1], num_classes)
  report["loss"] = float(
      tf.reduce_mean(
          tf.keras.losses.categorical_crossentropy(labels, logits,
                                                   from_logits=True)))
  return report


def train_classifier(model: tf.keras.Model,
                     train: Arrays,
                     val: Optional[Arrays],
                     normalization: Normalization,
                     num_classes: int,
                     config: TrainConfig,
                     recorder: Optional[RunRecorder] = None,
                     checkpoint_dir: Optional[str] = None,
                     resume: bool = False,
                     log_prefix: str = "",
                     setting: Optional[Mapping[str, Any]] = None
                     ) -> TrainResult:
  """Trains `model` (logits output) on `train`; early-stops on `val`.

  With early stopping the model ends holding its best-validation weights.
  Raises DivergenceError on a non-finite loss; checkpoints already written
  are kept. Epochs run in `EpochDriver` (checkpoints holding the run's
  `setting`, resume, rows, TensorBoard in the recorder's `tb/`).
  """
  config.validate()
  x_train, y_train = train
  steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
  optimizer = build_optimizer(config.optimizer, steps_per_epoch, config.epochs)
  loss_fn = classification_loss(num_classes, config.label_smoothing)

  best_val = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
  best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
  # The best-validation weights live in the checkpoint too: a run resumed
  # after its best epoch must end with that epoch's weights, as an
  # uninterrupted run does.
  best_weights = [tf.Variable(w, trainable=False)
                  for w in model.get_weights()]
  driver = EpochDriver(
      EpochDriverConfig(
          epochs=config.epochs, seed=config.seed,
          seed_offset=SUPERVISED_SEED_OFFSET, checkpoint_dir=checkpoint_dir,
          checkpoint_every=config.checkpoint_every, resume=resume,
          stage="training", metric_prefix=log_prefix, log_prefix=log_prefix,
          log_metrics=("train_loss", "train_accuracy", "val_accuracy"),
          examples_per_epoch=len(y_train), setting=setting),
      {"model": model, "optimizer": optimizer, "best_val": best_val,
       "best_epoch": best_epoch, "best_weights": best_weights})

  @tf.function
  def train_step(images, labels):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = loss_fn(labels, logits)
      # Keras layer regularizers (if a model declares them) join the loss.
      if model.losses:
        loss += tf.add_n(model.losses)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    correct = tf.reduce_sum(
        tf.cast(tf.equal(tf.argmax(logits, -1), tf.cast(labels, tf.int64)),
                tf.float32))
    return loss, correct

  def run_epoch(epoch: int, seed: int) -> Dict[str, float]:
    del epoch  # the seed is all the pipeline needs
    pipeline = make_pipeline(
        x_train, y_train, config.batch_size, normalization, shuffle=True,
        seed=seed, augment=config.augment, cache=False)
    loss_sum, correct_sum, batches = 0.0, 0.0, 0
    for images, labels in pipeline:
      loss, correct = train_step(images, labels)
      loss_sum += float(loss)
      correct_sum += float(correct)
      batches += 1
    return {"train_loss": loss_sum / max(batches, 1),
            "train_accuracy": correct_sum / len(y_train)}

  def evaluate(epoch: int) -> Dict[str, float]:
    report = evaluate_classifier(model, val, normalization, num_classes,
                                 batch_size=config.eval_batch_size)
    if report["accuracy"] > best_val.numpy():
      best_val.assign(report["accuracy"])
      best_epoch.assign(epoch)
      for var, value in zip(best_weights, model.get_weights()):
        var.assign(value)
    return {"val_loss": report["loss"], "val_accuracy": report["accuracy"]}

  def should_stop(epoch: int) -> bool:
    if epoch - int(best_epoch.numpy()) < config.early_stopping_patience:
      return False
    logging.info("%searly stopping at epoch %d (best epoch %d)", log_prefix,
                 epoch, int(best_epoch.numpy()))
    return True

  early_stopping = bool(config.early_stopping_patience and val is not None)
  run = driver.run(run_epoch, evaluate if val is not None else None,
                   should_stop if early_stopping else None, optimizer,
                   recorder, run_tensorboard_dir(recorder))
  if val is not None and int(best_epoch.numpy()) > 0:
    model.set_weights([var.numpy() for var in best_weights])
  return TrainResult(
      epochs_run=run.epochs_run, best_epoch=int(best_epoch.numpy()),
      best_val_accuracy=(float(best_val.numpy()) if val is not None else None),
      stopped_early=run.stopped_early, train_seconds=run.train_seconds,
      examples_per_second=run.examples_per_second, history=run.history)
