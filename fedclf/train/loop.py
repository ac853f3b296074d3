"""The one supervised training loop (centralized baselines, probes, fine-tuning).

A plain tf.function step over per-epoch pipelines rather than `model.fit`:
each epoch's shuffle and augmentation seeds derive from (seed, epoch), so a
run resumed from a checkpoint replays exactly the batches the uninterrupted
run would have seen. Checkpoints hold the model, the optimizer and the
early-stopping state.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import weakref
from typing import Callable, Dict, List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from fedclf import metrics as metrics_lib
from fedclf.data.preprocess import AugmentConfig
from fedclf.data.preprocess import make_pipeline
from fedclf.data.preprocess import Normalization
from fedclf.errors import DivergenceError
from fedclf.errors import UserError
from fedclf.results import RunRecorder
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


def _epoch_seed(seed: int, epoch: int) -> int:
  return (seed * 1_000_003 + epoch * 7919) % (2**31 - 1)


def checkpoint_manager(ckpt: tf.train.Checkpoint,
                       checkpoint_dir: Optional[str], every: int,
                       resume: bool, epoch: tf.Variable,
                       log_prefix: str = ""
                       ) -> Optional[tf.train.CheckpointManager]:
  """A manager keeping the last two checkpoints (None when checkpoints are
  off); with `resume`, restores the latest into `ckpt` first."""
  if not checkpoint_dir or not every:
    return None
  manager = tf.train.CheckpointManager(ckpt, checkpoint_dir, max_to_keep=2)
  if resume and manager.latest_checkpoint:
    ckpt.restore(manager.latest_checkpoint)
    logging.info("%sresumed from %s (epoch %d)", log_prefix,
                 manager.latest_checkpoint, int(epoch.numpy()))
  return manager


def train_classifier(model: tf.keras.Model,
                     train: Arrays,
                     val: Optional[Arrays],
                     normalization: Normalization,
                     num_classes: int,
                     config: TrainConfig,
                     recorder: Optional[RunRecorder] = None,
                     checkpoint_dir: Optional[str] = None,
                     resume: bool = False,
                     log_prefix: str = "") -> TrainResult:
  """Trains `model` (logits output) on `train`; early-stops on `val`.

  With early stopping the model ends holding its best-validation weights.
  Raises DivergenceError on a non-finite loss; checkpoints already written
  are kept.
  """
  config.validate()
  x_train, y_train = train
  steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
  optimizer = build_optimizer(config.optimizer, steps_per_epoch, config.epochs)
  loss_fn = classification_loss(num_classes, config.label_smoothing)

  epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
  best_val = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
  best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
  ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer,
                             epoch=epoch_var, best_val=best_val,
                             best_epoch=best_epoch)
  manager = checkpoint_manager(ckpt, checkpoint_dir, config.checkpoint_every,
                               resume, epoch_var, log_prefix)
  best_weights = model.get_weights() if best_epoch.numpy() > 0 else None

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

  history = []
  stopped_early = False
  train_seconds = 0.0
  examples_seen = 0
  start_epoch = int(epoch_var.numpy())
  for epoch in range(start_epoch + 1, config.epochs + 1):
    pipeline = make_pipeline(
        x_train, y_train, config.batch_size, normalization, shuffle=True,
        seed=_epoch_seed(config.seed, epoch), augment=config.augment,
        cache=False)
    t0 = time.time()
    loss_sum, correct_sum, batches = 0.0, 0.0, 0
    for images, labels in pipeline:
      loss, correct = train_step(images, labels)
      loss_sum += float(loss)
      correct_sum += float(correct)
      batches += 1
    epoch_seconds = time.time() - t0
    train_seconds += epoch_seconds
    examples_seen += len(y_train)
    row = {
        "train_loss": loss_sum / max(batches, 1),
        "train_accuracy": correct_sum / len(y_train),
        "learning_rate": float(optimizer.learning_rate(optimizer.iterations))
                         if callable(optimizer.learning_rate) else
                         float(optimizer.learning_rate),
        "epoch_seconds": epoch_seconds,
    }
    if not math.isfinite(row["train_loss"]):
      where = f"; last good checkpoint in {checkpoint_dir}" if manager else ""
      raise DivergenceError(
          f"{log_prefix}training diverged at epoch {epoch} (loss "
          f"{row['train_loss']}); lower the learning rate{where}")
    if val is not None:
      val_report = evaluate_classifier(model, val, normalization, num_classes,
                                       batch_size=config.eval_batch_size)
      row["val_loss"] = val_report["loss"]
      row["val_accuracy"] = val_report["accuracy"]
      if row["val_accuracy"] > best_val.numpy():
        best_val.assign(row["val_accuracy"])
        best_epoch.assign(epoch)
        best_weights = model.get_weights()
    history.append({"epoch": epoch, **row})
    if recorder is not None:
      recorder.log_metrics(epoch, {f"{log_prefix}{k}" if log_prefix else k: v
                                   for k, v in row.items()}, "epoch")
    logging.info(
        "%sepoch %d/%d  loss %.4f  acc %.4f%s  %.1fs", log_prefix, epoch,
        config.epochs, row["train_loss"], row["train_accuracy"],
        f"  val_acc {row['val_accuracy']:.4f}" if "val_accuracy" in row else "",
        epoch_seconds)
    epoch_var.assign(epoch)
    if manager and (epoch % config.checkpoint_every == 0 or
                    epoch == config.epochs):
      manager.save(checkpoint_number=epoch)
    if (config.early_stopping_patience and val is not None and
        epoch - int(best_epoch.numpy()) >= config.early_stopping_patience):
      logging.info("%searly stopping at epoch %d (best epoch %d)", log_prefix,
                   epoch, int(best_epoch.numpy()))
      stopped_early = True
      break
  if val is not None and best_weights is not None:
    model.set_weights(best_weights)
  return TrainResult(
      epochs_run=int(epoch_var.numpy()),
      best_epoch=int(best_epoch.numpy()),
      best_val_accuracy=(float(best_val.numpy()) if val is not None else None),
      stopped_early=stopped_early,
      train_seconds=train_seconds,
      examples_per_second=examples_seen / max(train_seconds, 1e-9),
      history=history)
