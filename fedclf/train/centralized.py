"""Centralized supervised training: the baseline every federated, SSL and
adaptation result is compared against."""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from fedclf import metrics as metrics_lib
from fedclf.data import DataConfig
from fedclf.data import ImageDataset
from fedclf.data import load_dataset
from fedclf.data.preprocess import check_input_scaling
from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.models import count_params
from fedclf.models import ModelConfig
from fedclf.models.pretrained import build_source_classifier
from fedclf.models.pretrained import check_encoder_init
from fedclf.models.pretrained import check_source_fits
from fedclf.models.pretrained import EncoderInit
from fedclf.models.pretrained import FeatureStatistics
from fedclf.models.pretrained import read_source_encoder
from fedclf.models.pretrained import source_feature_statistics
from fedclf.models.pretrained import source_record
from fedclf.models.pretrained import SourceEncoder
from fedclf.registry import MODELS
from fedclf.results import RunRecorder
from fedclf.results.run_folder import run_setting
from fedclf.results.tensorboard_log import log_final_row
from fedclf.results.tensorboard_log import start_run_log
from fedclf.results.trained_run import write_final_model
from fedclf.train.loop import evaluate_classifier
from fedclf.train.loop import train_classifier
from fedclf.train.loop import TrainConfig


@dataclasses.dataclass(frozen=True)
class CentralizedConfig:
  data: DataConfig
  model_name: str = "cnn"
  model: ModelConfig = ModelConfig()
  train: TrainConfig = TrainConfig()
  val_fraction: float = 0.1  # holdout from train for early stopping/selection
  cv_folds: int = 0  # >= 2 adds k-fold cross-validation on the training set
  label_fraction: float = 1.0  # train on a stratified fraction of the labels
  input_scaling: str = "standardize"  # or "unit": pixels in [0, 1]
  # The encoder starts from a finished run's (and may stay frozen).
  encoder_init: EncoderInit = EncoderInit()

  def validate(self) -> None:
    MODELS.get(self.model_name)  # unknown model: error lists the names
    check_encoder_init(self.encoder_init, self.model)
    if not 0.0 <= self.val_fraction < 1.0:
      raise UserError(f"val_fraction must be in [0, 1), got "
                      f"{self.val_fraction}")
    if self.cv_folds == 1 or self.cv_folds < 0:
      raise UserError(f"cv_folds must be 0 (off) or >= 2, got {self.cv_folds}")
    check_label_fraction(self.label_fraction)
    check_input_scaling(self.input_scaling)
    self.train.validate()


def check_label_fraction(fraction: float) -> None:
  """The share of labelled examples, centralized or each client's."""
  if not 0.0 < fraction <= 1.0:
    raise UserError(f"label_fraction must be in (0, 1], got {fraction}")


def labelled_subset(labels: np.ndarray, fraction: float,
                    seed: int) -> np.ndarray:
  """Indices of a stratified `fraction` of the examples (at least one per
  class), fixed by `seed` so SSL label-efficiency runs use the same labels."""
  if fraction >= 1.0:
    return np.arange(len(labels))
  _, keep = metrics_lib.holdout_split(len(labels), fraction, seed, labels)
  return np.sort(keep)


def _split_train_val(ds: ImageDataset, config: CentralizedConfig,
                     idx: np.ndarray):
  x, y = ds.x_train[idx], ds.y_train[idx]
  if config.val_fraction <= 0:
    return (x, y), None
  train_idx, val_idx = metrics_lib.holdout_split(len(y), config.val_fraction,
                                                 config.train.seed, y)
  return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])


def _build(config: CentralizedConfig, ds: ImageDataset,
           source: Optional[SourceEncoder],
           stats: Optional[FeatureStatistics], seed_offset: int = 0
           ) -> tf.keras.Model:
  """The classifier, its encoder loaded from `source` when there is one
  (every cross-validation fold too: they score the same setup)."""
  model_config = dataclasses.replace(config.model,
                                     seed=config.model.seed + seed_offset)
  return build_source_classifier(config.model_name, ds.input_shape,
                                 ds.num_classes, model_config, source, stats)


def cross_validate(config: CentralizedConfig, ds: ImageDataset,
                   normalization: Normalization,
                   recorder: Optional[RunRecorder],
                   source: Optional[SourceEncoder] = None,
                   stats: Optional[FeatureStatistics] = None,
                   idx: Optional[np.ndarray] = None) -> Dict:
  """k-fold CV on the training set (its examples `idx`, default the
  labelled share): a fresh model per fold, scored on its held-out fold. The
  test set is never touched here."""
  if idx is None:
    idx = labelled_subset(ds.y_train, config.label_fraction,
                          config.data.seed)
  x, y = ds.x_train[idx], ds.y_train[idx]
  folds = metrics_lib.kfold_indices(len(y), config.cv_folds, config.train.seed,
                                    y)
  fold_accuracy: List[float] = []
  fold_f1: List[float] = []
  for k, (train_idx, val_idx) in enumerate(folds):
    model = _build(config, ds, source, stats, seed_offset=k + 1)
    train_classifier(model, (x[train_idx], y[train_idx]), None, normalization,
                     ds.num_classes, config.train, recorder,
                     log_prefix=f"fold{k}_")
    report = evaluate_classifier(model, (x[val_idx], y[val_idx]),
                                 normalization, ds.num_classes,
                                 batch_size=config.train.eval_batch_size)
    fold_accuracy.append(report["accuracy"])
    fold_f1.append(report["macro_f1"])
    logging.info("fold %d/%d: val accuracy %.4f", k + 1, config.cv_folds,
                 report["accuracy"])
  return {
      "folds": config.cv_folds,
      "fold_accuracy": fold_accuracy,
      "mean_accuracy": float(np.mean(fold_accuracy)),
      "std_accuracy": float(np.std(fold_accuracy)),
      "mean_macro_f1": float(np.mean(fold_f1)),
  }


def run_centralized(config: CentralizedConfig, out_dir: str,
                    run_config: Dict, resume: bool = False,
                    train_indices: Optional[np.ndarray] = None) -> Dict:
  """Trains, evaluates on the test set and writes the run's results files.

  `run_config` is what the user asked for (flags), recorded in config.json
  beside the resolved library config. `train_indices` (into the training
  set) replaces config.label_fraction's stratified share: a federated run's
  comparison trains on exactly its clients' examples.
  """
  config.validate()
  # Read (and refused) before anything is written to out_dir.
  source = read_source_encoder(config.encoder_init)
  ds = load_dataset(config.data)
  logging.info("dataset %s", ds.describe())
  check_source_fits(source, config.model_name, config.model, ds.input_shape,
                    ds.num_classes)
  recorder = RunRecorder(out_dir, {"flags": run_config,
                                   "resolved": config,
                                   "dataset": ds.describe(),
                                   **source_record(source)}, resume=resume)
  start_run_log(recorder, run_config)
  if train_indices is None:
    train_indices = labelled_subset(ds.y_train, config.label_fraction,
                                    config.data.seed)
  elif (train_indices.size == 0 or train_indices.min() < 0 or
        train_indices.max() >= len(ds.y_train)):
    raise ValueError(f"train_indices must index the {len(ds.y_train)} "
                     "training examples")
  train, val = _split_train_val(ds, config, train_indices)
  normalization = Normalization.for_scaling(config.input_scaling, train[0])
  # Over the training split's images (no labels read).
  stats = source_feature_statistics(source, config.model_name, config.model,
                                    ds.input_shape, ds.num_classes,
                                    [train[0]], normalization)
  summary: Dict = {"dataset": ds.describe(), "model": config.model_name,
                   "train_examples": int(len(train[1])),
                   "val_examples": 0 if val is None else int(len(val[1])),
                   **source_record(source, stats)}
  if config.cv_folds:
    summary["cross_validation"] = cross_validate(config, ds, normalization,
                                                 recorder, source, stats,
                                                 train_indices)
  model = _build(config, ds, source, stats)
  summary["parameters"] = count_params(model)
  result = train_classifier(model, train, val, normalization, ds.num_classes,
                            config.train, recorder,
                            checkpoint_dir=os.path.join(out_dir,
                                                        "checkpoints"),
                            resume=resume, setting=run_setting(run_config))
  test = evaluate_classifier(model, (ds.x_test, ds.y_test), normalization,
                             ds.num_classes, ds.class_names,
                             config.train.eval_batch_size)
  metrics_lib.plot_confusion_matrix(
      np.asarray(test["confusion_matrix"]),
      os.path.join(out_dir, "confusion_matrix.png"), ds.class_names,
      f"{config.model_name} on {ds.name}: test accuracy {test['accuracy']:.4f}")
  test_row = {"test_accuracy": test["accuracy"], "test_loss": test["loss"],
              "test_macro_f1": test["macro_f1"]}
  log_final_row(recorder, result.epochs_run, test_row)
  summary.update({
      "test_accuracy": test["accuracy"],
      "test_loss": test["loss"],
      "test_macro_precision": test["macro_precision"],
      "test_macro_recall": test["macro_recall"],
      "test_macro_f1": test["macro_f1"],
      "test_per_class": test["per_class"],
      "test_confusion_matrix": test["confusion_matrix"],
      "epochs_run": result.epochs_run,
      "best_epoch": result.best_epoch,
      "best_val_accuracy": result.best_val_accuracy,
      "stopped_early": result.stopped_early,
      "train_seconds": round(result.train_seconds, 3),
      "examples_per_second": round(result.examples_per_second, 1),
      "normalization": dataclasses.asdict(normalization),
  })
  write_final_model(recorder, model, "centralized", summary, normalization)
  logging.info("test accuracy %.4f  macro F1 %.4f  (%s)", test["accuracy"],
               test["macro_f1"], out_dir)
  return summary
