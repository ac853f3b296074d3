"""Centralized training: optimizers, schedules, the training loop, baselines."""

from fedclf.train.loop import evaluate_classifier
from fedclf.train.loop import predict_logits
from fedclf.train.loop import train_classifier
from fedclf.train.loop import TrainConfig
from fedclf.train.loop import TrainResult
from fedclf.train.optimizers import build_optimizer
from fedclf.train.optimizers import OptimizerConfig
