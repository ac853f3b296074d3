"""A complete centralized SSL run: pretrain, then evaluate the encoder.

`run_ssl_pretraining` pretrains an encoder of the model zoo on the training
images (labels unused), then reports what the representation is worth:
linear-probe and kNN accuracy against the same architecture left at its
random initialisation, fine-tuning on a few labels against training from
scratch on the same labels, and a t-SNE picture.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, Tuple

from absl import logging
import tensorflow as tf

from fedclf.data import DataConfig
from fedclf.data import load_dataset
from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.models import build_model_parts
from fedclf.models import count_params
from fedclf.models import ModelConfig
from fedclf.models import ModelParts
from fedclf.registry import MODELS
from fedclf.results import RunRecorder
from fedclf.results.run_folder import run_setting
from fedclf.results.tensorboard_log import log_final_row
from fedclf.results.tensorboard_log import start_run_log
from fedclf.results.trained_run import write_final_model
from fedclf.ssl.augment import default_for
from fedclf.ssl.method import build_method
from fedclf.ssl.method import SslConfig
from fedclf.ssl.evaluate import DEFAULT_FINETUNE
from fedclf.ssl.evaluate import DEFAULT_PROBE
from fedclf.ssl.evaluate import extract_features
from fedclf.ssl.evaluate import knn_accuracy
from fedclf.ssl.evaluate import FinetuneRecipe
from fedclf.ssl.evaluate import label_efficiency
from fedclf.ssl.evaluate import linear_probe
from fedclf.ssl.evaluate import plot_embeddings
from fedclf.ssl.pretrain import PretrainConfig
from fedclf.ssl.pretrain import pretrain_encoder
from fedclf.ssl.retrieval import retrieval_metrics
from fedclf.train.epoch_driver import last_epoch_metrics
from fedclf.train.loop import TrainConfig


@dataclasses.dataclass(frozen=True)
class SslRunConfig:
  """Attributes:
    data: the dataset; its training images are the unlabelled pool.
    model_name: zoo model whose encoder is pretrained.
    model: its architecture options and initialiser seed.
    ssl: the SSL method and its heads.
    pretrain: the pretraining schedule (augment None: `default_for` the
      dataset).
    probe: linear-probe training (on frozen features).
    knn_k: neighbours of the kNN evaluation.
    label_fractions: label shares for fine-tuning vs from-scratch; empty
      skips the comparison.
    finetune: fine-tuning and from-scratch training settings.
    finetune_recipe: how the pretrained copy is fine-tuned (head first,
      lr scale); the from-scratch copy trains with `finetune` alone.
    embedding_points: t-SNE points in embeddings.png (0 = no plot).
    retrieval_references: the first this many training images are the
      labelled reference set that each test image's embedding is looked up
      in (recall@k, precision@k, mAP@R; 0 = no retrieval evaluation).
  """
  data: DataConfig
  model_name: str = "cnn"
  model: ModelConfig = ModelConfig()
  ssl: SslConfig = SslConfig()
  pretrain: PretrainConfig = PretrainConfig()
  probe: TrainConfig = DEFAULT_PROBE
  knn_k: int = 20
  label_fractions: Tuple[float, ...] = (0.01, 0.1)
  finetune: TrainConfig = DEFAULT_FINETUNE
  finetune_recipe: FinetuneRecipe = FinetuneRecipe()
  embedding_points: int = 2000
  retrieval_references: int = 10000

  def validate(self) -> None:
    MODELS.get(self.model_name)  # unknown model: the error lists the names
    self.ssl.validate()
    self.pretrain.validate()
    self.probe.validate()
    self.finetune.validate()
    self.finetune_recipe.validate()
    if self.knn_k < 1:
      raise UserError(f"knn_k must be >= 1, got {self.knn_k}")
    for fraction in self.label_fractions:
      if not 0.0 < fraction <= 1.0:
        raise UserError(f"label fractions must be in (0, 1], got {fraction}")
    if self.retrieval_references < 0 or 0 < self.retrieval_references < 5:
      raise UserError(f"retrieval_references must be 0 (none) or >= 5, got "
                      f"{self.retrieval_references}")
    if self.embedding_points < 0 or 0 < self.embedding_points < 4:
      raise UserError(f"embedding_points must be 0 (no plot) or >= 4, got "
                      f"{self.embedding_points}")


def _retrieval(config: SslRunConfig, ds, encoder: tf.keras.Model,
               normalization: Normalization) -> Dict[str, float]:
  """tensorflow-similarity's retrieval metrics of the test embeddings
  against the first `retrieval_references` training embeddings."""
  if not config.retrieval_references:
    return {}
  references = slice(0, config.retrieval_references)
  return retrieval_metrics(
      extract_features(encoder, ds.x_test, normalization), ds.y_test,
      extract_features(encoder, ds.x_train[references], normalization),
      ds.y_train[references])


def _evaluate_encoder(config: SslRunConfig, ds, encoder: tf.keras.Model,
                      build_parts: Callable[[], ModelParts],
                      normalization: Normalization,
                      recorder: RunRecorder) -> Dict[str, float]:
  """The pretrained encoder against the same encoder at its random init:
  linear probe and kNN accuracy, then label efficiency (fine-tuning against
  training from scratch on each label fraction)."""
  train = (ds.x_train, ds.y_train)
  test = (ds.x_test, ds.y_test)
  probe = linear_probe(encoder, train, test, normalization,
                       ds.num_classes, config.probe, recorder, "probe_")
  knn = knn_accuracy(encoder, train, test, normalization, config.knn_k)
  random_encoder = build_parts().encoder
  random_probe = linear_probe(random_encoder, train, test, normalization,
                              ds.num_classes, config.probe, recorder,
                              "random_probe_")
  random_knn = knn_accuracy(random_encoder, train, test, normalization,
                            config.knn_k)
  logging.info("linear probe %.4f (random init %.4f)  kNN %.4f (random init "
               "%.4f)", probe["accuracy"], random_probe["accuracy"], knn,
               random_knn)
  retrieval = _retrieval(config, ds, encoder, normalization)
  random_retrieval = _retrieval(config, ds, random_encoder, normalization)
  efficiency = label_efficiency(build_parts, encoder, ds, normalization,
                                config.label_fractions, config.finetune,
                                config.data.seed, recorder,
                                config.finetune_recipe)
  return {
      "linear_probe_accuracy": probe["accuracy"],
      "linear_probe_macro_f1": probe["macro_f1"],
      "linear_probe_train_accuracy": probe["train_accuracy"],
      "knn_accuracy": knn,
      "random_init_linear_probe_accuracy": random_probe["accuracy"],
      "random_init_knn_accuracy": random_knn,
      **retrieval,
      **{f"random_init_{name}": value
         for name, value in random_retrieval.items()},
      **efficiency,
  }


def run_ssl_pretraining(config: SslRunConfig, out_dir: str, run_config: Dict,
                        resume: bool = False) -> Dict:
  """Pretrains, evaluates and writes the run's results files.

  Writes config.json, metrics.jsonl (one row per pretraining, probe and
  fine-tuning epoch, plus a final row), summary.json, embeddings.png,
  encoder.keras and checkpoints/ to `out_dir`. `run_config` is what the
  user asked for (flags), recorded beside the resolved config.

  Returns:
    The summary: `linear_probe_accuracy`, `knn_accuracy`,
    `random_init_linear_probe_accuracy`, `random_init_knn_accuracy`,
    `retrieval_recall_at_1`, `retrieval_recall_at_5`,
    `retrieval_precision_at_1|5`, `retrieval_map_at_r` (and their
    `random_init_` twins),
    `finetune_accuracy_{pct}` / `supervised_accuracy_{pct}` per label
    fraction, the pretraining loss and timing.
  """
  config.validate()
  ds = load_dataset(config.data)
  logging.info("dataset %s", ds.describe())
  augment = config.pretrain.augment or default_for(ds.name,
                                                   ds.input_shape[-1])
  config = dataclasses.replace(
      config, pretrain=dataclasses.replace(config.pretrain, augment=augment))
  recorder = RunRecorder(out_dir, {"flags": run_config, "resolved": config,
                                   "dataset": ds.describe()}, resume=resume)
  start_run_log(recorder, run_config)
  # Statistics of the (unlabelled) training images: the pretraining views,
  # the probes and fine-tuning all see inputs normalized the same way.
  normalization = Normalization.from_images(ds.x_train)

  def build_parts() -> ModelParts:
    # Deterministic from config.model.seed: every call gives the same
    # initial weights, so "random init" and "from scratch" are the encoder
    # the pretraining started from.
    return build_model_parts(config.model_name, ds.input_shape,
                             ds.num_classes, config.model)

  parts = build_parts()
  method = build_method(config.ssl, parts.feature_dim)
  result = pretrain_encoder(parts.encoder, method, ds.x_train, config.pretrain,
                            recorder, os.path.join(out_dir, "checkpoints"),
                            resume, normalization,
                            setting=run_setting(run_config))

  final = _evaluate_encoder(config, ds, parts.encoder, build_parts,
                            normalization, recorder)
  embedding_points = 0
  if config.embedding_points:
    embedding_points = plot_embeddings(
        parts.encoder, ds.x_test, ds.y_test,
        os.path.join(out_dir, "embeddings.png"), normalization,
        config.embedding_points, config.pretrain.seed,
        f"{config.ssl.method} {config.model_name} on {ds.name}: "
        f"probe {final['linear_probe_accuracy']:.4f}", ds.class_names)
  log_final_row(recorder, result.epochs_run, final)
  # pretrain_encoder's default log_prefix is its rows' metric prefix.
  last = last_epoch_metrics(result.history, result.epochs_run, recorder,
                            "ssl_")
  summary = {
      "dataset": ds.describe(),
      "model": config.model_name,
      "method": config.ssl.method,
      "encoder_parameters": count_params(parts.encoder),
      "head_parameters": count_params(method.heads),
      "feature_dim": parts.feature_dim,
      **final,
      "knn_k": config.knn_k,
      "label_fractions": list(config.label_fractions),
      "epochs_run": result.epochs_run,
      "final_ssl_loss": last.get("loss"),
      "final_representation_std": last.get("representation_std"),
      "pretrain_seconds": round(result.train_seconds, 3),
      "pretrain_examples_per_second": round(result.examples_per_second, 1),
      "embedding_points": embedding_points,
      "normalization": dataclasses.asdict(normalization),
  }
  write_final_model(recorder, parts.encoder, "ssl_pretrain", summary,
                    normalization)
  logging.info("%s: linear probe %.4f, kNN %.4f (%s)", config.ssl.method,
               final["linear_probe_accuracy"], final["knn_accuracy"], out_dir)
  return summary
