"""Starting a model's encoder from the encoder of a finished run.

Every trainer (centralized, federated, domain adaptation) can begin from
the encoder another run left behind, of any kind that has one (an SSL
pretraining, a centralized or federated classifier, ...):

    source = read_source_encoder(EncoderInit(run_dir="runs/ssl/x"))
    model = build_source_classifier(name, input_shape, num_classes,
                                    model_config, source)

(`build_source_classifier` is `build_classifier` then `load_source_encoder`
on its "encoder", then `standardize_head_features` when given statistics;
the federated simulation calls the parts on the models it already holds.)

`read_source_encoder` refuses, with a one-line UserError, a missing folder,
an unfinished run (no summary.json recording its kind and model file, or no
model file), a diverged run and a run whose model has no encoder;
`load_source_encoder` refuses an encoder of another architecture (model
name, width multiplier, normalization layers, weight shapes) or input
shape, naming what differs.

Feature standardization (`--standardize_encoder_features`,
`ModelConfig.standardize_features`): the head starts with a fixed
per-feature standardization whose statistics are the loaded encoder's
features over the new run's training images (`encoder_feature_statistics`,
`standardize_head_features`), as the SSL linear probe standardizes them:

    stats = encoder_feature_statistics(model.get_layer("encoder"),
                                       [x_train], normalization)
    standardize_head_features(model, stats)  # or build_source_classifier(
                                             #   ..., source, stats)

Input normalization: the new run normalizes its inputs as it always does
(statistics of its own training images); the source's statistics are
recorded beside them (`SourceEncoder.record`), so a transfer across
datasets or input scalings is visible in config.json.

This module reads run folders itself (json and the Keras file) rather than
through `fedclf.run_reader`, which sits above the trainers (it imports
`fedclf.adapt`); the trainers import this module.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.models import build_classifier
from fedclf.models.building_blocks import ModelConfig
from fedclf.data.preprocess import Normalization
from fedclf.results.trained_run import KINDS
from fedclf.train.loop import predict_logits

# The ModelConfig field that changes every encoder's weight shapes. `norm`
# is compared through the normalization layers the encoders actually have
# (an mlp has none, whatever its norm says); seed and dropout change
# values or masks, not the architecture.
ARCHITECTURE_FIELDS = ("width_multiplier",)


@dataclasses.dataclass(frozen=True)
class EncoderInit:
  """Where a run's encoder starts.

  Attributes:
    run_dir: a finished run folder whose encoder's weights the new model's
      encoder starts from ("" = the usual random initialisation).
    freeze: keep that encoder fixed: only the head trains (and, federated,
      only the head is aggregated).
  """
  run_dir: str = ""
  freeze: bool = False

  def validate(self) -> None:
    if self.freeze and not self.run_dir:
      raise UserError("--freeze_encoder needs --init_encoder=RUN_DIR (a "
                      "random encoder left frozen would never learn)")


@dataclasses.dataclass(frozen=True)
class SourceEncoder:
  """The encoder of a finished run, as `read_source_encoder` found it.

  Attributes:
    run_dir, kind: the run folder and its recorded kind.
    git_commit: the commit the run was made at (its config.json), or None.
    model_name: the zoo model it recorded; model: its ModelConfig fields.
    input_shape: the encoder's (height, width, channels).
    norm_layers: the class names of its normalization layers, sorted.
    normalization: {"mean", "std"} its inputs were normalized with.
    weights: the encoder's weights, in `get_weights` order.
    freeze: whether the new run keeps them fixed.
  """
  run_dir: str
  kind: str
  git_commit: Optional[str]
  model_name: str
  model: Dict[str, Any]
  input_shape: Tuple[int, ...]
  norm_layers: Tuple[str, ...]
  normalization: Dict[str, Any]
  weights: List[np.ndarray]
  freeze: bool

  def record(self) -> Dict[str, Any]:
    """What config.json and summary.json keep of the source."""
    return {"run_dir": os.path.abspath(self.run_dir), "kind": self.kind,
            "git_commit": self.git_commit, "model_name": self.model_name,
            "input_shape": list(self.input_shape),
            "input_normalization": self.normalization,
            "frozen": self.freeze}


def check_encoder_init(init: EncoderInit, model: ModelConfig) -> None:
  """`init.validate()`, and the model's feature standardization needs an
  encoder to take its statistics from."""
  init.validate()
  if model.standardize_features and not init.run_dir:
    raise UserError("--standardize_encoder_features needs "
                    "--init_encoder=RUN_DIR (it standardizes a loaded "
                    "encoder's features)")


@dataclasses.dataclass(frozen=True)
class FeatureStatistics:
  """Per-feature mean and std of an encoder's features over image sets.

  Attributes:
    mean, std: float32 [feature_dim] (std floored, `RELATIVE_STD_FLOOR`).
    examples: images summed over; image_sets: how many sets (clients).
  """
  mean: np.ndarray
  std: np.ndarray
  examples: int
  image_sets: int

  def record(self) -> Dict[str, Any]:
    """What config.json and summary.json keep (not the vectors: they are
    weights of the saved model)."""
    return {"examples": self.examples, "image_sets": self.image_sets,
            "mean_abs_mean": round(float(np.abs(self.mean).mean()), 6),
            "mean_std": round(float(self.std.mean()), 6)}


# No feature's std counts as less than this fraction of the median
# feature's (nor less than FEATURE_STD_FLOOR, for an encoder whose every
# unit is dead). A nearly dead unit (a federated SimCLR encoder had one at
# std 0.0007, the median 0.088) divided by its own std is amplified 100x
# more than the others: once the encoder fine-tunes, any change of that
# unit swamps the head (FedAvg from that encoder fell to 0.17 accuracy at
# round 20). The probe's frozen features do not move, so it needs no floor.
RELATIVE_STD_FLOOR = 0.25
FEATURE_STD_FLOOR = 1e-6


def encoder_feature_statistics(encoder: tf.keras.Model,
                               image_sets: Iterable[np.ndarray],
                               normalization: Normalization,
                               batch_size: int = 512) -> FeatureStatistics:
  """Mean and std of `encoder`'s features over the union of `image_sets`.

  Computed from per-set sums (count, feature sum, sum of squares, float64):
  in a federated run each set is one client's training images, so this is
  one round of federated analytics in which a client sends 2 x feature_dim
  + 1 numbers and the server adds them; no image or feature vector leaves
  a client. The sets are read one at a time (a generator of the clients'
  images never holds them all at once).
  """
  count, total, squares, sets = 0, 0.0, 0.0, 0
  for images in image_sets:
    sets += 1
    if len(images) == 0:
      continue
    features = predict_logits(encoder, images, normalization,
                              batch_size).astype(np.float64)
    count += len(features)
    total = total + features.sum(axis=0)
    squares = squares + (features ** 2).sum(axis=0)
  if count == 0:
    raise ValueError("feature statistics need at least one image")
  mean = total / count
  variance = np.maximum(squares / count - mean ** 2, 0.0)
  std = np.sqrt(variance)
  std = np.maximum(std, max(RELATIVE_STD_FLOOR * float(np.median(std)),
                            FEATURE_STD_FLOOR))
  return FeatureStatistics(mean.astype(np.float32), std.astype(np.float32),
                           int(count), sets)


def source_record(source: Optional[SourceEncoder],
                  stats: Optional[FeatureStatistics] = None) -> Dict[str, Any]:
  """What a trainer's config.json and summary.json keep of where its
  encoder started: {} for a random initialisation."""
  if source is None:
    return {}
  record: Dict[str, Any] = {"init_encoder": source.record()}
  if stats is not None:
    record["feature_standardization"] = stats.record()
  return record


def standardize_head_features(model: tf.keras.Model,
                              stats: FeatureStatistics) -> None:
  """Sets the statistics of `model`'s head standardization (a classifier
  built with `ModelConfig.standardize_features`)."""
  try:
    layer = model.get_layer("head").get_layer("feature_standardization")
  except ValueError:
    raise ValueError(f"model {model.name} has no head feature "
                     "standardization (ModelConfig.standardize_features)"
                     ) from None
  layer.set_statistics(stats.mean, stats.std)


def norm_layers(encoder: tf.keras.Model) -> Tuple[str, ...]:
  """Sorted class names of the normalization layers inside `encoder`."""
  return tuple(sorted(type(layer).__name__ for layer in encoder.submodules
                      if "Normalization" in type(layer).__name__))


def _read_json(path: str, what: str) -> Dict[str, Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise UserError(f"{path} not found: {what}") from None
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f"cannot read {path}: {e}") from None


def _finished_kind(run_dir: str, summary: Dict[str, Any]) -> str:
  if summary.get("diverged_at_round"):
    raise UserError(f"--init_encoder: {run_dir} diverged; it has no trained "
                    "encoder")
  kind = summary.get("kind")
  if kind not in KINDS or "model_file" not in summary:
    raise UserError(f"--init_encoder: {run_dir}/summary.json records no "
                    "finished run kind and model file (an unfinished or "
                    "older run)")
  return kind


def _encoder_of(model: tf.keras.Model, kind: str,
                run_dir: str) -> tf.keras.Model:
  if not KINDS[kind].classifier:
    return model  # encoder.keras is the encoder itself
  try:
    return model.get_layer("encoder")
  except ValueError:
    raise UserError(f"--init_encoder: the {kind} model of {run_dir} has no "
                    "layer named 'encoder'") from None


def _load_model(path: str) -> tf.keras.Model:
  if not os.path.exists(path):
    raise UserError(f"--init_encoder: {path} not found (an unfinished run, "
                    "or its model file was not kept)")
  try:
    return tf.keras.models.load_model(path, compile=False)
  except Exception as e:  # pylint: disable=broad-except
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise UserError(f"--init_encoder: cannot load {path}: "
                    f"{first_line[:200]}") from None


def read_source_encoder(init: EncoderInit) -> Optional[SourceEncoder]:
  """The encoder of the finished run `init.run_dir` (None when empty)."""
  init.validate()
  run_dir = init.run_dir
  if not run_dir:
    return None
  if not os.path.isdir(run_dir):
    raise UserError(f"--init_encoder: run directory {run_dir} does not "
                    "exist")
  summary = _read_json(os.path.join(run_dir, "summary.json"),
                       "--init_encoder needs a finished run")
  kind = _finished_kind(run_dir, summary)
  record = _read_json(os.path.join(run_dir, "config.json"),
                      "--init_encoder needs the run's config")
  resolved = (record.get("config") or {}).get("resolved") or {}
  if "model_name" not in resolved:
    raise UserError(f"--init_encoder: {run_dir}/config.json records no "
                    "model_name")
  encoder = _encoder_of(
      _load_model(os.path.join(run_dir, summary["model_file"])), kind,
      run_dir)
  return SourceEncoder(
      run_dir=run_dir, kind=kind,
      git_commit=(record.get("git") or {}).get("commit"),
      model_name=resolved["model_name"], model=resolved.get("model") or {},
      input_shape=tuple(int(d) for d in encoder.input_shape[1:]),
      norm_layers=norm_layers(encoder),
      normalization=summary.get("input_normalization"),
      weights=encoder.get_weights(), freeze=init.freeze)


def _difference(source: SourceEncoder, encoder: tf.keras.Model,
                model_name: str, model_config: ModelConfig) -> Optional[str]:
  """The first way `source` differs from `encoder` (source's value first),
  or None when its weights fit."""
  if source.model_name != model_name:
    return f"model {source.model_name} != {model_name}"
  for name in ARCHITECTURE_FIELDS:
    theirs, ours = source.model.get(name), getattr(model_config, name)
    if theirs is not None and theirs != ours:
      return f"{name} {theirs} != {ours}"
  if source.norm_layers != norm_layers(encoder):
    return (f"normalization layers {_counted(source.norm_layers)} != "
            f"{_counted(norm_layers(encoder))} (--norm)")
  shape = tuple(int(d) for d in encoder.input_shape[1:])
  if source.input_shape != shape:
    return f"input shape {source.input_shape} != {shape}"
  if ([tuple(w.shape) for w in source.weights] !=
      [tuple(w.shape) for w in encoder.weights]):
    return "encoder weight shapes differ"
  return None


def _counted(names: Tuple[str, ...]) -> str:
  if not names:
    return "none"
  return ", ".join(f"{n} x{names.count(n)}" for n in sorted(set(names)))


def check_source_fits(source: Optional[SourceEncoder], model_name: str,
                      model_config: ModelConfig, input_shape: Sequence[int],
                      num_classes: int) -> None:
  """`load_source_encoder`'s refusals, on a throwaway model: for trainers
  to call before they write anything to their run folder."""
  if source is not None:
    build_source_classifier(model_name, input_shape, num_classes,
                            model_config, source)


def build_source_classifier(model_name: str, input_shape: Sequence[int],
                            num_classes: int, model_config: ModelConfig,
                            source: Optional[SourceEncoder],
                            stats: Optional[FeatureStatistics] = None
                            ) -> tf.keras.Model:
  """A zoo classifier whose encoder starts from `source` (when there is
  one) and whose head standardizes its features by `stats` (when given):
  the one way every trainer builds a model from a pretrained encoder."""
  model = build_classifier(model_name, input_shape, num_classes, model_config)
  load_source_encoder(source, model.get_layer("encoder"), model_name,
                      model_config)
  if stats is not None:
    standardize_head_features(model, stats)
  return model


def load_source_encoder(source: Optional[SourceEncoder],
                        encoder: tf.keras.Model, model_name: str,
                        model_config: ModelConfig) -> None:
  """Copies `source`'s weights into `encoder` and freezes it if asked.

  Raises:
    UserError: the source is another architecture or input shape (the
      message names the source's value first, then the new run's).
  """
  if source is None:
    return
  difference = _difference(source, encoder, model_name, model_config)
  if difference is not None:
    raise UserError(f"--init_encoder: {source.run_dir} has another encoder "
                    f"({difference})")
  encoder.set_weights(source.weights)
  if source.freeze:
    encoder.trainable = False


def source_feature_statistics(source: Optional[SourceEncoder],
                              model_name: str, model_config: ModelConfig,
                              input_shape: Sequence[int], num_classes: int,
                              image_sets: Sequence[np.ndarray],
                              normalization: Normalization
                              ) -> Optional[FeatureStatistics]:
  """The source encoder's feature statistics over `image_sets` (see
  `encoder_feature_statistics`) when `model_config` standardizes features,
  else None. Computed on a throwaway model, before training starts."""
  if source is None or not model_config.standardize_features:
    return None
  model = build_source_classifier(model_name, input_shape, num_classes,
                                  model_config, source)
  return encoder_feature_statistics(model.get_layer("encoder"), image_sets,
                                    normalization)
