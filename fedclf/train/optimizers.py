"""Optimizers and learning-rate schedules, shared by every kind of training.

Federated binaries build client and server optimizers from the same
`OptimizerConfig` (with prefixed flags), so a schedule or weight decay means
the same thing everywhere.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.train.lars import Lars

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop",
              "adagrad", "lars")
SCHEDULES = ("constant", "step", "cosine", "exponential")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  name: str = "sgd"
  learning_rate: float = 0.01
  momentum: float = 0.9  # for momentum/nesterov/rmsprop/lars
  weight_decay: float = 0.0  # decoupled (Loshchilov & Hutter) weight decay
  schedule: str = "constant"
  warmup_epochs: float = 0.0  # linear warm-up from 0 over these epochs
  step_epochs: float = 30.0  # "step": multiply by step_gamma every this many
  step_gamma: float = 0.1
  min_lr_fraction: float = 0.0  # cosine floor as a fraction of the peak
  epsilon: float = 1e-7  # adaptive optimizers; FedAdam/FedYogi tune it

  def validate(self) -> None:
    if self.name not in OPTIMIZERS:
      raise UserError(f"unknown optimizer {self.name!r}; choose one of: "
                      f"{', '.join(OPTIMIZERS)}")
    if self.schedule not in SCHEDULES:
      raise UserError(f"unknown lr schedule {self.schedule!r}; choose one of: "
                      f"{', '.join(SCHEDULES)}")
    if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
      raise UserError(f"learning rate must be > 0, got {self.learning_rate}")
    if self.weight_decay < 0 or self.warmup_epochs < 0 or self.step_epochs <= 0:
      raise UserError("weight decay and warm-up must be >= 0, step_epochs > 0")


class WarmupSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up, then constant, step, cosine or exponential decay."""

  def __init__(self, config: OptimizerConfig, steps_per_epoch: int,
               total_epochs: int):
    super().__init__()
    self.config = config
    self.steps_per_epoch = max(1, int(steps_per_epoch))
    self.total_steps = max(1, self.steps_per_epoch * int(total_epochs))
    self.warmup_steps = int(round(config.warmup_epochs * self.steps_per_epoch))

  def __call__(self, step):
    c = self.config
    step = tf.cast(step, tf.float32)
    peak = tf.constant(c.learning_rate, tf.float32)
    warmup = float(self.warmup_steps)
    decay_step = tf.maximum(step - warmup, 0.0)
    decay_total = max(1.0, float(self.total_steps) - warmup)
    if c.schedule == "constant":
      lr = peak
    elif c.schedule == "step":
      period = c.step_epochs * self.steps_per_epoch
      lr = peak * tf.pow(c.step_gamma, tf.floor(decay_step / period))
    elif c.schedule == "cosine":
      progress = tf.minimum(decay_step / decay_total, 1.0)
      floor = peak * c.min_lr_fraction
      lr = floor + (peak - floor) * 0.5 * (1.0 + tf.cos(math.pi * progress))
    else:  # exponential: reaches 1% of the peak at the end
      lr = peak * tf.pow(0.01, decay_step / decay_total)
    if self.warmup_steps > 0:
      lr = tf.where(step < warmup, peak * (step + 1.0) / warmup, lr)
    return lr

  def get_config(self):
    return {"config": dataclasses.asdict(self.config),
            "steps_per_epoch": self.steps_per_epoch,
            "total_epochs": self.total_steps // self.steps_per_epoch}


def build_optimizer(config: OptimizerConfig, steps_per_epoch: int = 1,
                    total_epochs: int = 1) -> tf.keras.optimizers.Optimizer:
  config.validate()
  lr = WarmupSchedule(config, steps_per_epoch, total_epochs)
  wd = config.weight_decay or None
  opt = tf.keras.optimizers
  if config.name == "sgd":
    return opt.SGD(lr, weight_decay=wd)
  if config.name in ("momentum", "nesterov"):
    return opt.SGD(lr, momentum=config.momentum,
                   nesterov=config.name == "nesterov", weight_decay=wd)
  if config.name == "adam":
    return opt.Adam(lr, epsilon=config.epsilon, weight_decay=wd)
  if config.name == "adamw":
    return opt.AdamW(lr, weight_decay=config.weight_decay or 0.004,
                     epsilon=config.epsilon)
  if config.name == "rmsprop":
    return opt.RMSprop(lr, momentum=config.momentum, epsilon=config.epsilon,
                       weight_decay=wd)
  if config.name == "lars":
    # Its weight decay is L2 inside the trust ratio (SimCLR's LARS).
    return Lars(lr, momentum=config.momentum,
                weight_decay=config.weight_decay)
  return opt.Adagrad(lr, epsilon=config.epsilon, weight_decay=wd)
