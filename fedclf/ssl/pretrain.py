"""The one centralized self-supervised pretraining loop.

Like `fedclf.train.loop`, a tf.function step over per-epoch batches run by
`fedclf.train.epoch_driver.EpochDriver`: each epoch's shuffle derives from
(seed, epoch) and each step's augmentation seed from (seed, epoch, step),
so a run resumed from a checkpoint replays exactly the views the
uninterrupted run would have seen. Checkpoints hold the encoder, the method
(heads and any extra state), the optimizer and the epoch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.results import RunRecorder
from fedclf.results.tensorboard_log import run_tensorboard_dir
from fedclf.ssl.augment import default_for
from fedclf.ssl.augment import SslAugmentConfig
from fedclf.ssl.method import ssl_step_loss
from fedclf.ssl.method import SslMethod
from fedclf.train.epoch_driver import EpochDriver
from fedclf.train.epoch_driver import EpochDriverConfig
from fedclf.train.epoch_driver import SSL_SEED_OFFSET
from fedclf.train.loop import predict_logits
from fedclf.train.optimizers import build_optimizer
from fedclf.train.optimizers import OptimizerConfig

# Examples used for the per-epoch collapse diagnostic (representation_std).
_DIAGNOSTIC_EXAMPLES = 1024


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  """Attributes:
    epochs: passes over the unlabelled data.
    batch_size: images per step (each gives two views). The last partial
      batch is dropped: contrastive and Barlow losses need a full batch of
      negatives / statistics, and a batch of one has neither.
    optimizer: the optimizer and its schedule (cosine decay is usual).
    augment: the views' augmentations; None picks `default_for` the
      images' channel count.
    checkpoint_every: epochs between checkpoints (0 = never).
    seed: shuffles and augmentations.
  """
  epochs: int = 100
  batch_size: int = 256
  optimizer: OptimizerConfig = OptimizerConfig(
      name="adam", learning_rate=1e-3, schedule="cosine")
  augment: Optional[SslAugmentConfig] = None
  checkpoint_every: int = 1
  seed: int = 0

  def validate(self) -> None:
    if self.epochs < 1:
      raise UserError(f"epochs must be >= 1, got {self.epochs}")
    if self.batch_size < 2:
      raise UserError(f"SSL batch size must be >= 2 (a pair of views needs "
                      f"other examples to contrast with), got "
                      f"{self.batch_size}")
    if self.checkpoint_every < 0:
      raise UserError("checkpoint_every must be >= 0")
    if self.seed < 0:
      raise UserError(f"seed must be >= 0, got {self.seed}")
    self.optimizer.validate()
    if self.augment is not None:
      self.augment.validate()


@dataclasses.dataclass
class PretrainResult:
  epochs_run: int
  train_seconds: float
  examples_per_second: float
  history: List[Dict[str, float]]


def representation_std(encoder: tf.keras.Model, images: np.ndarray,
                       normalization: Normalization) -> float:
  """Mean per-dimension std of L2-normalized features, times sqrt(dim).

  The collapse monitor of SimSiam (Chen & He 2021, Fig. 2): 0 for a
  collapsed encoder, 1 for isotropic features. ReLU features share a
  positive mean direction and sit well below 1 even when healthy (about
  0.1-0.4 for the zoo's encoders), so watch for a fall towards 0 in
  metrics.jsonl rather than the level.
  """
  features = predict_logits(encoder, images, normalization, batch_size=256)
  features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True),
                         1e-12)
  return float(features.std(axis=0).mean() * math.sqrt(features.shape[1]))


def _images_and_batch_size(x_unlabelled: np.ndarray, batch_size: int,
                           log_prefix: str) -> Tuple[np.ndarray, int]:
  """The images as float32 [N, H, W, C] and the batch size, at most N."""
  x = np.asarray(x_unlabelled, np.float32)
  if x.ndim != 4:
    raise UserError(f"expected images [N, H, W, C], got shape {x.shape}")
  if len(x) < 2:
    raise UserError(f"SSL pretraining needs at least 2 images, got {len(x)}")
  if batch_size > len(x):
    logging.warning("%sbatch size %d > %d images; using %d", log_prefix,
                    batch_size, len(x), len(x))
  return x, min(batch_size, len(x))


def pretrain_encoder(encoder: tf.keras.Model,
                     method: SslMethod,
                     x_unlabelled: np.ndarray,
                     config: PretrainConfig,
                     recorder: Optional[RunRecorder] = None,
                     checkpoint_dir: Optional[str] = None,
                     resume: bool = False,
                     normalization: Optional[Normalization] = None,
                     log_prefix: str = "ssl_",
                     setting: Optional[Mapping[str, Any]] = None
                     ) -> PretrainResult:
  """Trains `encoder` and `method.heads` on `method`'s loss.

  Args:
    encoder: image -> features model, trained in place.
    method: the SSL method (its heads are trained in place).
    x_unlabelled: float32 [N, H, W, C] images in [0, 1]; labels unused.
    config: epochs, batch size, optimizer, augmentations, seed.
    recorder: gets one metrics row per epoch (keys prefixed `log_prefix`).
    checkpoint_dir: where checkpoints go (None: no checkpoints).
    resume: continue from the latest checkpoint in `checkpoint_dir`.
    normalization: applied to the views before the encoder; use the same
      statistics for probes and fine-tuning. None: computed from
      `x_unlabelled`.
    log_prefix: prefix of the metric names and log lines.
    setting: the run's setting, stored in and checked against its
      checkpoints (see `EpochDriverConfig.setting`).

  Returns:
    The `PretrainResult` (one history row per epoch run in this call).

  Raises:
    DivergenceError: the loss became NaN or infinite (checkpoints written
      so far are kept).
    UserError: bad config or too few images.
  """
  config.validate()
  x, batch_size = _images_and_batch_size(x_unlabelled, config.batch_size,
                                         log_prefix)
  steps_per_epoch = len(x) // batch_size
  augment = config.augment or default_for(int(x.shape[-1]))
  if normalization is None:
    normalization = Normalization.from_images(x)
  optimizer = build_optimizer(config.optimizer, steps_per_epoch, config.epochs)
  total_steps = float(steps_per_epoch * config.epochs)
  method.build(encoder)
  variables = encoder.trainable_variables + method.heads.trainable_variables
  driver = EpochDriver(
      EpochDriverConfig(
          epochs=config.epochs, seed=config.seed, seed_offset=SSL_SEED_OFFSET,
          checkpoint_dir=checkpoint_dir,
          checkpoint_every=config.checkpoint_every, resume=resume,
          stage="pretraining", metric_prefix=log_prefix,
          log_prefix=log_prefix,
          log_metrics=("loss", "representation_std", "learning_rate"),
          examples_per_epoch=steps_per_epoch * batch_size, setting=setting),
      {"encoder": encoder, "method": method, "optimizer": optimizer})

  @tf.function
  def train_step(images, seed):
    with tf.GradientTape() as tape:
      loss = ssl_step_loss(method, encoder, images, seed, augment,
                           normalization, training=True)
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    # The optimizer's step count is checkpointed, so a resumed run's
    # schedules (BYOL's target momentum) continue where they stopped.
    method.after_step(encoder, tf.cast(optimizer.iterations, tf.float32) /
                      total_steps)
    return loss

  def run_epoch(epoch: int, epoch_seed: int) -> Dict[str, float]:
    del epoch  # the seed is all the batches and views need
    order = np.random.default_rng(epoch_seed).permutation(len(x))
    order = order[:steps_per_epoch * batch_size]
    batches = tf.data.Dataset.from_tensor_slices(x[order]).batch(
        batch_size, drop_remainder=True).prefetch(2)
    loss_sum = 0.0
    for step, images in enumerate(batches):
      seed = tf.constant([epoch_seed, step], tf.int64)
      loss_sum += float(train_step(images, seed))
    return {"loss": loss_sum / steps_per_epoch}

  diagnostic = x[np.random.default_rng(config.seed).permutation(len(x))
                 [:_DIAGNOSTIC_EXAMPLES]]

  def evaluate(epoch: int) -> Dict[str, float]:
    del epoch  # the same diagnostic images every epoch
    return {"representation_std": representation_std(encoder, diagnostic,
                                                      normalization)}

  run = driver.run(run_epoch, evaluate, None, optimizer, recorder,
                   run_tensorboard_dir(recorder))
  return PretrainResult(
      epochs_run=run.epochs_run, train_seconds=run.train_seconds,
      examples_per_second=run.examples_per_second, history=run.history)
