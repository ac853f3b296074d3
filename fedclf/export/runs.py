"""A finished fedclf run directory as a classifier plus how it was fed.

Every training binary writes `config.json` (flags and resolved configs) and
`summary.json`; centralized and adapted runs also save `model.keras`, while
federated runs keep their server weights as `checkpoints/round_NNNNN.npz`.
`load_trained_run` turns any of them into the Keras classifier (normalized
float images -> logits), the input normalization it was trained with, and
a way to load its evaluation data, so that exporters and interpretation
never need to know which binary produced a model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf

from fedclf.data import DataConfig
from fedclf.data import ImageDataset
from fedclf.data import load_dataset
from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.models import build_classifier
from fedclf.models import ModelConfig

KINDS = ("centralized", "federated", "adapted")

_CHECKPOINT = re.compile(r"round_(\d+)\.npz")


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


def run_kind(resolved: Dict[str, Any]) -> str:
  """Which binary wrote a run, from the keys of its resolved config."""
  if "simulation" in resolved:
    if resolved.get("objective", "supervised") != "supervised":
      raise UserError(
          f"federated {resolved['objective']} runs train an encoder without "
          "a classifier head; export a supervised or probed model instead")
    return "federated"
  if "adapt" in resolved:
    return "adapted"
  if "ssl" in resolved or "pretrain" in resolved:
    raise UserError("self-supervised pretraining runs save only the encoder "
                    "(encoder.keras), not a classifier; export a run that "
                    "trains a head on it")
  if "train" in resolved and "data" in resolved:
    return "centralized"
  raise UserError("config.json does not look like a centralized, federated "
                  "or adaptation run")


def latest_checkpoint(checkpoint_dir: str) -> Optional[str]:
  if not os.path.isdir(checkpoint_dir):
    return None
  rounds = sorted((int(m.group(1)), name)
                  for name in os.listdir(checkpoint_dir)
                  if (m := _CHECKPOINT.fullmatch(name)))
  return os.path.join(checkpoint_dir, rounds[-1][1]) if rounds else None


def load_server_weights(model: tf.keras.Model, path: str) -> int:
  """Assigns a federated checkpoint's global weights to `model`.

  The npz holds `trainable/i` and `non_trainable/i` in the order of the
  model's trainable and non-trainable variables (see
  `fedclf.federated.rounds.Checkpointer`). Returns the checkpoint's round.
  """
  try:
    data = np.load(path)
    trainable = [data[f"trainable/{i}"]
                 for i in range(len(model.trainable_variables))]
    frozen = [data[f"non_trainable/{i}"]
              for i in range(len(model.non_trainable_variables))]
    round_num = int(data["round_num"])
  except (OSError, KeyError, ValueError) as e:
    raise UserError(f"cannot read the weights of checkpoint {path}: "
                    f"{e}") from None
  for var, value in zip(model.trainable_variables + model.non_trainable_variables,
                        trainable + frozen):
    if tuple(var.shape) != value.shape:
      raise UserError(f"checkpoint {path} does not match the model of its "
                      f"run: {var.name} is {tuple(var.shape)}, saved "
                      f"{value.shape}")
    var.assign(value)
  return round_num


@dataclasses.dataclass
class TrainedRun:
  """A classifier trained by a fedclf binary.

  Attributes:
    run_dir: the run's output directory.
    kind: "centralized", "federated" or "adapted".
    model: normalized float images [batch, H, W, C] -> logits.
    normalization: the per-channel statistics the model's inputs were
      normalized with ((pixel / 255 - mean) / std).
    record: the run's config.json.
    summary: the run's summary.json.
    weights_from: the model.keras or checkpoint the weights came from.
    data_dir: overrides the data directory the run recorded ("" keeps it).
  """
  run_dir: str
  kind: str
  model: tf.keras.Model
  normalization: Normalization
  record: Dict[str, Any]
  summary: Dict[str, Any]
  weights_from: str
  data_dir: str = ""
  _data: Optional[ImageDataset] = dataclasses.field(default=None, repr=False)

  @property
  def resolved(self) -> Dict[str, Any]:
    return self.record["config"]["resolved"]

  @property
  def input_shape(self):
    return tuple(int(d) for d in self.model.input_shape[1:])

  @property
  def num_classes(self) -> int:
    return int(self.model.output_shape[-1])

  def data(self) -> ImageDataset:
    """The data the run was scored on (adapted runs: the target domain);
    loaded once."""
    if self._data is None:
      self._data = load_run_data(self.kind, self.resolved, self.data_dir)
    return self._data

  def reported_test_accuracy(self) -> Optional[float]:
    """The test accuracy the training run itself reported."""
    for key in ("test_accuracy", "final_test_accuracy", "target_accuracy"):
      if key in self.summary:
        return float(self.summary[key])
    return None


def load_run_data(kind: str, resolved: Dict[str, Any],
                  data_dir: str = "") -> ImageDataset:
  """The run's training and test data, as its binary loaded them."""
  if kind == "adapted":
    # Imported here: fedclf.adapt pulls in the domain generators.
    from fedclf.adapt import DomainLimits  # pylint: disable=g-import-not-at-top
    from fedclf.adapt import load_domain_pair  # pylint: disable=g-import-not-at-top
    pair = load_domain_pair(
        resolved["source"], resolved["target"], resolved["image_size"],
        resolved["channels"], resolved["seed"],
        _dataclass_from(DomainLimits, resolved.get("limits", {})),
        data_dir or resolved.get("data_dir", ""),
        resolved.get("download", True), resolved.get("mnist_m_seed", 0))
    return pair.target
  config = _dataclass_from(DataConfig, resolved["data"])
  if data_dir:
    config = dataclasses.replace(config, data_dir=data_dir)
  return load_dataset(config)


def _normalization(kind: str, resolved: Dict[str, Any],
                   summary: Dict[str, Any], data_dir: str
                   ) -> tuple[Normalization, Optional[ImageDataset]]:
  recorded = summary.get("normalization")
  if recorded:
    return Normalization(tuple(recorded["mean"]), tuple(recorded["std"])), None
  if kind != "federated" or resolved.get("val_fraction", 0.0):
    raise UserError("summary.json records no input normalization; rerun "
                    "the training binary to record it")
  # Federated runs (before they recorded it) normalize with the statistics
  # of the whole training set as loaded: recompute them the same way.
  ds = load_run_data(kind, resolved, data_dir)
  return Normalization.from_images(ds.x_train), ds


def _rebuild_federated(run_dir: str, record: Dict[str, Any]
                       ) -> tuple[tf.keras.Model, str]:
  path = latest_checkpoint(os.path.join(run_dir, "checkpoints"))
  if path is None:
    raise UserError(f"{run_dir} has neither model.keras nor checkpoints/"
                    "round_*.npz; rerun it with --checkpoint_every >= 1")
  resolved = record["config"]["resolved"]
  dataset = record["config"]["dataset"]
  model = build_classifier(resolved["model_name"],
                           tuple(dataset["input_shape"]),
                           int(dataset["num_classes"]),
                           _dataclass_from(ModelConfig, resolved["model"]))
  load_server_weights(model, path)
  return model, path


def load_trained_run(run_dir: str, data_dir: str = "") -> TrainedRun:
  """Loads the classifier of a finished centralized, federated or adapted
  run (model.keras, else the latest federated checkpoint)."""
  if not os.path.isdir(run_dir):
    raise UserError(f"run directory {run_dir} does not exist")
  record = _read_json(os.path.join(run_dir, "config.json"))
  summary = _read_json(os.path.join(run_dir, "summary.json"))
  if summary.get("diverged_at_round"):
    raise UserError(f"{run_dir} diverged at round "
                    f"{summary['diverged_at_round']}; it has no trained "
                    f"model to load")
  try:
    resolved = record["config"]["resolved"]
  except (KeyError, TypeError):
    raise UserError(f"{run_dir}/config.json has no resolved config") from None
  kind = run_kind(resolved)
  keras_path = os.path.join(run_dir, "model.keras")
  if os.path.exists(keras_path):
    try:
      model = tf.keras.models.load_model(keras_path, compile=False)
    except Exception as e:  # pylint: disable=broad-except
      first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
      raise UserError(f"cannot load {keras_path}: {first_line[:200]}") from None
    weights_from = keras_path
  elif kind == "federated":
    model, weights_from = _rebuild_federated(run_dir, record)
  else:
    raise UserError(f"{keras_path} not found (it is not committed: "
                    "regenerate the run with the command in its results "
                    "README)")
  normalization, data = _normalization(kind, resolved, summary, data_dir)
  return TrainedRun(run_dir=run_dir, kind=kind, model=model,
                    normalization=normalization, record=record,
                    summary=summary, weights_from=weights_from,
                    data_dir=data_dir, _data=data)
