"""The one reader of fedclf run folders (export and interpretation use it).

`load_trained_run` reads a finished run by the kind its summary records
(the contract, the kinds and the writer: `fedclf.results.trained_run`): the
saved model as it was trained, its input normalization and the data its
accuracy is reported on. It sits above the trainers' packages because
reading an adaptation run's data needs `fedclf.adapt`; the writer sits
below them, so trainers import it without an import cycle.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Optional, Tuple

import tensorflow as tf

from fedclf.adapt import DomainLimits
from fedclf.adapt import load_domain_pair
from fedclf.data import DataConfig
from fedclf.data import ImageDataset
from fedclf.data import load_dataset
from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.results.trained_run import CLASSIFIER_KINDS
from fedclf.results.trained_run import KINDS
from fedclf.results.trained_run import RUN_KINDS
from fedclf.results.trained_run import TARGET_DOMAIN


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
  if KINDS[kind].data == TARGET_DOMAIN:
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
