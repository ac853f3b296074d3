"""Run folders: what every fedclf trainer leaves behind, and their one reader.

A finished run folder holds:

    config.json     fedclf.results.record: {"config": {"flags": ...,
                    "resolved": <the trainer's config>, ...}, versions, git,
                    command, ...}
    metrics.jsonl   one row per evaluation
    summary.json    the trainer's final metrics, plus the three entries
                    `write_final_model` adds:
                      kind: one of RUN_KINDS (below): which trainer wrote the
                        folder, hence how its config and data are read;
                      model_file: the saved Keras model, relative to the
                        folder ("model.keras" or "encoder.keras");
                      input_normalization: {"mean": [...], "std": [...]},
                        the per-channel statistics the saved model's inputs
                        were normalized with ((pixels - mean) / std, pixels
                        in [0, 1]) on the data its reported accuracy is
                        measured on (a domain-adaptation run: the target's).
    model.keras | encoder.keras
                    the final model (Keras v3 format): a classifier
                    (normalized images -> logits) or, for self-supervised
                    kinds, the encoder (normalized images -> features).

Kinds (`RUN_KINDS`), the trainer that writes each, its model file, the data
its accuracy is reported on and the summary key of that accuracy:

    centralized                  fedclf.train.centralized.run_centralized;
                                 model.keras; config "data" test set;
                                 test_accuracy
    federated                    fedclf.federated.Simulation.run (supervised
                                 objective; also simulations.federated);
                                 model.keras (the global model); config
                                 "data" test set; final_test_accuracy
    federated_ssl                Simulation.run with an SSL objective;
                                 encoder.keras; config "data" test set;
                                 final_knn_accuracy
    ssl_pretrain                 fedclf.ssl.run_ssl_pretraining;
                                 encoder.keras; config "data" test set;
                                 knn_accuracy
    domain_adaptation            fedclf.adapt.run_adaptation; model.keras;
                                 the target domain's test set;
                                 target_accuracy
    federated_domain_adaptation  fedclf.adapt.run_federated_uda (unlabelled
                                 target clients); model.keras; the target
                                 domain's test set; target_accuracy
    federated_domain_mixture     fedclf.adapt.run_federated_adaptation
                                 (clients each hold one domain of a
                                 `domains:a+b` mixture); model.keras; the
                                 mixture's test set; final_test_accuracy

`load_trained_run` reads any of them by its recorded kind: the saved model
as it was trained, its input normalization and its evaluation data. Runs
written before runs recorded their kind are refused with a one-line
UserError asking for a rerun (or --resume) with the current version.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Optional, Tuple

import tensorflow as tf

from fedclf.data import DataConfig
from fedclf.data import ImageDataset
from fedclf.data import load_dataset
from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.results.record import atomic_output
from fedclf.results.record import RunRecorder

CLASSIFIER_FILE = "model.keras"
ENCODER_FILE = "encoder.keras"

# How a kind's evaluation data is loaded from its resolved config.
_DATASET = "dataset"  # load_dataset(resolved["data"])
_TARGET_DOMAIN = "target_domain"  # the target of load_domain_pair(...)


@dataclasses.dataclass(frozen=True)
class RunKind:
  """What a kind of run folder holds.

  Attributes:
    name: the `kind` recorded in summary.json.
    model_file: the saved model's file name in the folder.
    classifier: whether that model outputs class logits (else it is an
      encoder outputting features).
    data: how the evaluation data is loaded (`_DATASET`, `_TARGET_DOMAIN`).
    reported_accuracy: the summary key of the accuracy the trainer reported
      for the saved model on that data (kNN accuracy for encoders).
  """
  name: str
  model_file: str
  classifier: bool
  data: str
  reported_accuracy: str


_KINDS = (
    RunKind("centralized", CLASSIFIER_FILE, True, _DATASET, "test_accuracy"),
    RunKind("federated", CLASSIFIER_FILE, True, _DATASET,
            "final_test_accuracy"),
    RunKind("federated_ssl", ENCODER_FILE, False, _DATASET,
            "final_knn_accuracy"),
    RunKind("ssl_pretrain", ENCODER_FILE, False, _DATASET, "knn_accuracy"),
    RunKind("domain_adaptation", CLASSIFIER_FILE, True, _TARGET_DOMAIN,
            "target_accuracy"),
    RunKind("federated_domain_adaptation", CLASSIFIER_FILE, True,
            _TARGET_DOMAIN, "target_accuracy"),
    RunKind("federated_domain_mixture", CLASSIFIER_FILE, True, _DATASET,
            "final_test_accuracy"),
)
KINDS: Dict[str, RunKind] = {kind.name: kind for kind in _KINDS}
RUN_KINDS: Tuple[str, ...] = tuple(KINDS)
CLASSIFIER_KINDS: Tuple[str, ...] = tuple(k.name for k in _KINDS
                                          if k.classifier)


def write_final_model(recorder: RunRecorder, model: tf.keras.Model,
                      kind: str, summary: Dict[str, Any],
                      normalization: Normalization) -> Dict[str, Any]:
  """Saves a finished run's model, then its summary.json with its kind.

  The model is written first, atomically, so a summary.json recording a
  kind always has its model beside it. Every trainer calls this last.

  Args:
    recorder: the run's recorder (its folder and summary writer).
    model: the final classifier, or for self-supervised kinds the encoder.
    kind: one of `RUN_KINDS`.
    summary: the run's summary; `kind`, `model_file` and
      `input_normalization` are added to it in place, so a caller that
      rewrites the summary later keeps them.
    normalization: the input statistics of the data the summary's
      accuracy is reported on.

  Returns:
    `summary`.
  """
  if kind not in KINDS:
    raise ValueError(f"unknown run kind {kind!r}; one of {RUN_KINDS}")
  model_file = KINDS[kind].model_file
  with atomic_output(recorder.path(model_file)) as tmp:
    model.save(tmp)
  summary.update({"kind": kind, "model_file": model_file,
                  "input_normalization": {
                      "mean": list(normalization.mean),
                      "std": list(normalization.std)}})
  recorder.write_summary(summary)
  return summary


def _read_json(path: str) -> Dict[str, Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise UserError(f"{path} not found: not a finished fedclf run "
                    "directory") from None
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f"cannot read {path}: {e}") from None


def _dataclass_from(cls, values: Dict[str, Any]):
  """`cls(**values)` keeping only `cls`'s fields, lists made tuples (JSON
  has no tuples; the configs are frozen dataclasses with tuple fields)."""
  names = {f.name for f in dataclasses.fields(cls)}
  return cls(**{k: tuple(v) if isinstance(v, list) else v
                for k, v in values.items() if k in names})


def load_run_data(kind: str, resolved: Dict[str, Any],
                  data_dir: str = "") -> ImageDataset:
  """The data a run of `kind` reports its accuracy on, loaded as its
  trainer loaded it (`data_dir`, if given, replaces the recorded one)."""
  if KINDS[kind].data == _TARGET_DOMAIN:
    # Imported here: fedclf.adapt pulls in the domain generators.
    from fedclf.adapt import DomainLimits  # pylint: disable=g-import-not-at-top
    from fedclf.adapt import load_domain_pair  # pylint: disable=g-import-not-at-top
    target_limits = resolved.get("target_limits")
    pair = load_domain_pair(
        resolved["source"], resolved["target"], resolved["image_size"],
        resolved["channels"], resolved["seed"],
        _dataclass_from(DomainLimits, resolved.get("limits", {})),
        data_dir or resolved.get("data_dir", ""),
        resolved.get("download", True), resolved.get("mnist_m_seed", 0),
        None if target_limits is None else
        _dataclass_from(DomainLimits, target_limits))
    return pair.target
  config = _dataclass_from(DataConfig, resolved["data"])
  if data_dir:
    config = dataclasses.replace(config, data_dir=data_dir)
  return load_dataset(config)


@dataclasses.dataclass
class TrainedRun:
  """A finished run's saved model, read by `load_trained_run`.

  Attributes:
    run_dir: the run folder.
    kind: its `RUN_KINDS` entry.
    model: the saved model: normalized float images [batch, H, W, C] ->
      logits (classifier kinds) or features (encoder kinds).
    normalization: the statistics its inputs are normalized with
      ((pixel / 255 - mean) / std).
    record: the run's config.json.
    summary: the run's summary.json.
    model_path: the file the model was loaded from.
    data_dir: overrides the data directory the run recorded ("" keeps it).
  """
  run_dir: str
  kind: str
  model: tf.keras.Model
  normalization: Normalization
  record: Dict[str, Any]
  summary: Dict[str, Any]
  model_path: str
  data_dir: str = ""
  _data: Optional[ImageDataset] = dataclasses.field(default=None, repr=False)

  @property
  def resolved(self) -> Dict[str, Any]:
    return self.record["config"]["resolved"]

  @property
  def is_classifier(self) -> bool:
    return KINDS[self.kind].classifier

  @property
  def input_shape(self) -> Tuple[int, ...]:
    return tuple(int(d) for d in self.model.input_shape[1:])

  @property
  def num_classes(self) -> int:
    """The classifier's class count (classifier kinds only)."""
    return int(self.model.output_shape[-1])

  def data(self) -> ImageDataset:
    """The data the run reported its accuracy on (domain-adaptation runs:
    the target domain); loaded once."""
    if self._data is None:
      self._data = load_run_data(self.kind, self.resolved, self.data_dir)
    return self._data

  def reported_accuracy(self) -> Optional[float]:
    """The test accuracy the trainer reported for this model on `data()`
    (kNN accuracy of the features for encoder kinds)."""
    value = self.summary.get(KINDS[self.kind].reported_accuracy)
    return None if value is None else float(value)


def _load_keras(path: str) -> tf.keras.Model:
  if not os.path.exists(path):
    raise UserError(f"{path} not found (model files are not committed: "
                    "regenerate the run with the command in its results "
                    "README)")
  try:
    return tf.keras.models.load_model(path, compile=False)
  except Exception as e:  # pylint: disable=broad-except
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise UserError(f"cannot load {path}: {first_line[:200]}") from None


def _kind(run_dir: str, summary: Dict[str, Any]) -> str:
  if summary.get("diverged_at_round"):
    raise UserError(f"{run_dir} diverged at round "
                    f"{summary['diverged_at_round']}; it has no trained "
                    "model to load")
  kind = summary.get("kind")
  if kind is None:
    raise UserError(f"{run_dir}/summary.json records no run kind: it was "
                    "written by an older fedclf or is not a single trained "
                    "run; rerun it (or --resume it) with this version")
  if kind not in KINDS:
    raise UserError(f"{run_dir} is a {kind!r} run, which this fedclf does "
                    f"not know; kinds: {', '.join(RUN_KINDS)}")
  return kind


def load_trained_run(run_dir: str, data_dir: str = "") -> TrainedRun:
  """Loads the saved model of a finished run of any kind, by its recorded
  kind (see the module docstring for the folder's contract)."""
  if not os.path.isdir(run_dir):
    raise UserError(f"run directory {run_dir} does not exist")
  record = _read_json(os.path.join(run_dir, "config.json"))
  summary = _read_json(os.path.join(run_dir, "summary.json"))
  kind = _kind(run_dir, summary)
  if not isinstance(record.get("config"), dict) or (
      "resolved" not in record["config"]):
    raise UserError(f"{run_dir}/config.json has no resolved config")
  try:
    recorded = summary["input_normalization"]
    normalization = Normalization(tuple(recorded["mean"]),
                                  tuple(recorded["std"]))
    model_path = os.path.join(run_dir, summary["model_file"])
  except (KeyError, TypeError):
    raise UserError(f"{run_dir}/summary.json records a kind but not its "
                    "model_file and input_normalization; rerun it with this "
                    "version") from None
  return TrainedRun(run_dir=run_dir, kind=kind, model=_load_keras(model_path),
                    normalization=normalization, record=record,
                    summary=summary, model_path=model_path,
                    data_dir=data_dir)


def load_classifier_run(run_dir: str, data_dir: str = "") -> TrainedRun:
  """`load_trained_run` for users of a classifier (export,
  interpretation): encoder kinds are a UserError."""
  run = load_trained_run(run_dir, data_dir)
  if not run.is_classifier:
    raise UserError(
        f"{run_dir} is a {run.kind} run: it saved an encoder "
        f"({os.path.basename(run.model_path)}) without a classifier head; "
        f"use a run of kind {', '.join(CLASSIFIER_KINDS)}")
  return run
