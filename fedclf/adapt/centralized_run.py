"""A complete domain-adaptation run: load the pair, adapt, score both domains.

`run_adaptation` writes the usual results files (config.json,
metrics.jsonl, summary.json) plus the target confusion matrix and the
model; `run_adaptation_seeds` repeats it over seeds (one folder each) and
summarizes mean and standard deviation.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional, Sequence

from absl import logging
import numpy as np

from fedclf import metrics as metrics_lib
from fedclf.adapt.task import AdaptationResult
from fedclf.adapt.task import AdaptationTask
from fedclf.adapt.task import AdaptConfig
from fedclf.adapt.task import MODEL_SELECTION
from fedclf.adapt.domains import DEFAULT_IMAGE_SIZE
from fedclf.adapt.domains import DomainLimits
from fedclf.adapt.domains import DomainPair
from fedclf.adapt.domains import load_domain_pair
from fedclf.adapt.domains import parse_domain
from fedclf.errors import UserError
from fedclf.models import count_params
from fedclf.models import ModelConfig
from fedclf.models.pretrained import check_encoder_init
from fedclf.models.pretrained import check_source_fits
from fedclf.models.pretrained import EncoderInit
from fedclf.models.pretrained import read_source_encoder
from fedclf.models.pretrained import source_feature_statistics
from fedclf.models.pretrained import source_record
from fedclf.plugin_config import resolve_params
from fedclf.registry import ADAPTATION_METHODS
from fedclf.registry import MODELS
from fedclf.results import RunRecorder
from fedclf.results.run_folder import run_setting
from fedclf.results.tensorboard_log import log_final_row
from fedclf.results.tensorboard_log import start_run_log
from fedclf.results.trained_run import write_final_model
from fedclf.train.loop import evaluate_classifier

# Averaged over seeds by run_adaptation_seeds.
SEED_METRICS = ("target_accuracy", "target_macro_f1", "source_accuracy",
                "source_macro_f1")


@dataclasses.dataclass(frozen=True)
class AdaptRunConfig:
  """One adaptation run.

  Attributes:
    source, target: domain names (`fedclf.adapt.DOMAINS`).
    method: a registered adaptation method.
    image_size: the common square image size.
    channels: 1, 3, or 0 for 3 when either domain is colour, else 1.
    limits: per-domain train/test slice sizes (0 = all).
    target_limits: the target's, when they differ (None: `limits`).
    data_dir, download: as `DataConfig`.
    mnist_m_seed: the MNIST-M generator's seed (fixed across run seeds).
    model_name, model: the zoo model.
    adapt: the training settings and the method's params.
    seed: the limit slices' seed (model and training seeds are in `model`
      and `adapt`; `with_seed` sets all of them).
    encoder_init: the classifier's encoder starts from a finished run's
      (and may stay frozen); every method's classifier does.
  """
  source: str = "mnist"
  target: str = "usps"
  method: str = "source_only"
  image_size: int = DEFAULT_IMAGE_SIZE
  channels: int = 0
  limits: DomainLimits = DomainLimits()
  target_limits: Optional[DomainLimits] = None
  data_dir: str = ""
  download: bool = True
  mnist_m_seed: int = 0
  model_name: str = "cnn"
  model: ModelConfig = ModelConfig()
  adapt: AdaptConfig = AdaptConfig()
  seed: int = 0
  encoder_init: EncoderInit = EncoderInit()

  def validate(self) -> None:
    check_encoder_init(self.encoder_init, self.model)
    parse_domain(self.source)  # unknown: the error lists the domains
    parse_domain(self.target)
    ADAPTATION_METHODS.get(self.method)
    MODELS.get(self.model_name)
    if self.image_size < 1:
      raise UserError(f"image_size must be >= 1, got {self.image_size}")
    if self.seed < 0 or self.mnist_m_seed < 0:
      raise UserError("seeds must be >= 0")
    self.limits.validate()
    if self.target_limits is not None:
      self.target_limits.validate()
    # The params resolved, so the defaults too meet the training settings.
    self.with_resolved_params().adapt.validate()

  def with_resolved_params(self) -> "AdaptRunConfig":
    """This config with the method's params resolved (its defaults for
    None), as a run records and runs it."""
    return dataclasses.replace(self, adapt=dataclasses.replace(
        self.adapt, params=resolve_params(ADAPTATION_METHODS, self.method,
                                          self.adapt.params)))

  def with_seed(self, seed: int) -> "AdaptRunConfig":
    """This config with `seed` for the slices, the model and training
    (`finetune`'s second stage follows the training's)."""
    adapt = dataclasses.replace(
        self.adapt, train=dataclasses.replace(self.adapt.train, seed=seed))
    return dataclasses.replace(
        self, seed=seed, model=dataclasses.replace(self.model, seed=seed),
        adapt=adapt)

  def load_pair(self) -> DomainPair:
    return load_domain_pair(self.source, self.target, self.image_size,
                            self.channels, self.seed, self.limits,
                            self.data_dir, self.download, self.mnist_m_seed,
                            self.target_limits)


def evaluate_pair(result: AdaptationResult, pair: DomainPair,
                  batch_size: int = 512) -> Dict[str, Dict]:
  """Classification reports of `result.model` on both test sets."""
  return {
      domain: evaluate_classifier(result.model, (ds.x_test, ds.y_test),
                                  normalization, pair.num_classes,
                                  pair.class_names, batch_size)
      for domain, ds, normalization in (
          ("target", pair.target, result.normalizations.target),
          ("source", pair.source, result.normalizations.source))
  }


def run_adaptation(config: AdaptRunConfig, out_dir: str, run_config: Dict,
                   resume: bool = False) -> Dict:
  """Adapts, evaluates and writes the run's results files.

  Args:
    config: the run.
    out_dir: results folder (config.json, metrics.jsonl, summary.json,
      confusion_matrix.png with the target test set, model.keras,
      checkpoints/).
    run_config: what the user asked for (flags), recorded in config.json.
    resume: continue from the checkpoints in `out_dir`.

  Returns:
    The summary: `method`, `source`, `target`, `target_accuracy`,
    `target_macro_f1`, `source_accuracy`, `source_macro_f1`, per-class
    target metrics and confusion matrix, timings and the method's details.
    `test_accuracy` / `test_macro_f1` repeat the target's, for tables.
  """
  config.validate()
  config = config.with_resolved_params()
  # Read (and refused) before anything is written to out_dir.
  source = read_source_encoder(config.encoder_init)
  pair = config.load_pair()
  logging.info("domains %s", pair.describe())
  check_source_fits(source, config.model_name, config.model,
                    pair.input_shape, pair.num_classes)
  recorder = RunRecorder(out_dir, {"flags": run_config, "resolved": config,
                                   "domains": pair.describe(),
                                   **source_record(source)}, resume=resume)
  # The seed this run trains with: one of --seeds in a seed_<s> run.
  start_run_log(recorder, {**run_config, "seed": config.seed})
  task = AdaptationTask(pair, config.model_name, config.model, config.adapt,
                        recorder, os.path.join(out_dir, "checkpoints"),
                        resume, run_setting(run_config), source)
  # Over the source domain's training images, which the head trains on.
  task.feature_stats = source_feature_statistics(
      source, config.model_name, config.model, pair.input_shape,
      pair.num_classes, [pair.source.x_train], task.normalizations().source)
  encoder_start = source_record(source, task.feature_stats)
  result = ADAPTATION_METHODS.get(config.method)(task)
  reports = evaluate_pair(result, pair, config.adapt.train.eval_batch_size)
  target, source = reports["target"], reports["source"]
  title = f"{config.method}: {config.source} -> {config.target}"
  metrics_lib.plot_confusion_matrix(
      np.asarray(target["confusion_matrix"]),
      os.path.join(out_dir, "confusion_matrix.png"), pair.class_names,
      f"{title}: target test accuracy {target['accuracy']:.4f}")
  final = {"target_accuracy": target["accuracy"],
           "target_macro_f1": target["macro_f1"],
           "target_loss": target["loss"],
           "source_accuracy": source["accuracy"],
           "source_macro_f1": source["macro_f1"]}
  log_final_row(recorder, result.epochs_run, final)
  summary = {
      "method": config.method,
      "source": config.source,
      "target": config.target,
      "model": config.model_name,
      "parameters": count_params(result.model),
      "dataset": {"name": f"{config.source}->{config.target}",
                  **pair.describe()},
      **final,
      "test_accuracy": target["accuracy"],
      "test_macro_f1": target["macro_f1"],
      "target_per_class": target["per_class"],
      "target_confusion_matrix": target["confusion_matrix"],
      "source_loss": source["loss"],
      "epochs_run": result.epochs_run,
      "model_selection": MODEL_SELECTION,
      "train_seconds": round(result.train_seconds, 3),
      "examples_per_second": round(result.examples_per_second, 1),
      "normalization": config.adapt.normalization,
      "source_normalization": dataclasses.asdict(
          result.normalizations.source),
      "target_normalization": dataclasses.asdict(
          result.normalizations.target),
      **result.details,
      **encoder_start,
  }
  write_final_model(recorder, result.model, "domain_adaptation", summary,
                    result.normalizations.target)
  logging.info("%s: target accuracy %.4f, source accuracy %.4f (%s)", title,
               target["accuracy"], source["accuracy"], out_dir)
  return summary


def run_adaptation_seeds(config: AdaptRunConfig, seeds: Sequence[int],
                         out_dir: str, run_config: Dict,
                         resume: bool = False) -> Dict:
  """`run_adaptation` once per seed (into `out_dir/seed_<s>`), then a
  summary in `out_dir` with the mean and std over seeds of
  `SEED_METRICS` (e.g. `target_accuracy_mean`) and every seed's values."""
  seeds = [int(s) for s in seeds]
  if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
    raise UserError(f"seeds must be distinct and >= 0, got {seeds}")
  config.validate()
  config = config.with_resolved_params()
  recorder = RunRecorder(out_dir, {"flags": run_config, "resolved": config,
                                   "seeds": seeds}, resume=resume)
  per_seed = []
  for seed in seeds:
    summary = run_adaptation(config.with_seed(seed),
                             os.path.join(out_dir, f"seed_{seed}"),
                             run_config, resume)
    row = {key: summary[key] for key in SEED_METRICS}
    recorder.log_metrics(seed, row, "seed")
    per_seed.append({"seed": seed, **row})
  aggregate = {"method": config.method, "source": config.source,
               "target": config.target, "model": config.model_name,
               "seeds": seeds, "per_seed": per_seed}
  for key in SEED_METRICS:
    values = np.asarray([row[key] for row in per_seed])
    aggregate[key] = float(values.mean())
    aggregate[f"{key}_mean"] = float(values.mean())
    aggregate[f"{key}_std"] = float(values.std())
  recorder.write_summary(aggregate)
  return aggregate
