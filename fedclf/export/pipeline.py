"""Export a trained run to every deployment format and check each one.

`run_export` writes one new version, `<export_dir>/<model_name>/<version>/`:

    saved_model.pb, variables/    TF Serving SavedModel (uint8 images in)
    model_card.json               see fedclf.export.card
    tflite/model_float.tflite     float32 pixels in
    tflite/model_int8.tflite      full-integer, uint8 pixels in
    tfjs/model.json, *.bin        TensorFlow.js graph model

(TF Serving reads only the SavedModel files of a version folder and
ignores the rest.) It then scores every format on the run's test set next
to the Keras model and writes `<out_dir>/<model_name>/summary.json`,
`model_card.json` and `saved_model_cli.txt`, and re-renders
`<out_dir>/table.md` over every model exported into `out_dir`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Tuple

from absl import logging
import numpy as np

from fedclf.errors import UserError
from fedclf.export import card as card_lib
from fedclf.export import serving
from fedclf.export import tflite
from fedclf.export import tfjs
from fedclf.results import atomic_write_json
from fedclf.results import RunRecorder
from fedclf.results.record import atomic_write_text
from fedclf.run_reader import load_classifier_run
from fedclf.run_reader import TrainedRun
from fedclf.train.loop import predict_logits

FORMATS = ("saved_model", "tflite", "tfjs")

# The acceptance thresholds, checked and recorded per export.
SAVED_MODEL_LOGIT_TOLERANCE = 1e-4
TFLITE_FLOAT_MAX_DROP = 0.001  # 0.1 point of accuracy
TFLITE_INT8_MAX_DROP = 0.01  # 1 point
INT8_MIN_SIZE_RATIO = 3.5  # "about 4x smaller" than the float model


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """One export.

  Attributes:
    run_dir: a finished run of a classifier kind
      (`fedclf.results.trained_run.CLASSIFIER_KINDS`).
    model_name: the TF Serving model name (folder under export_dir).
    export_dir: where versions are written.
    formats: "saved_model" (always written: the others convert from it),
      "tflite" (float and int8), "tfjs".
    data_dir: overrides the data directory the run recorded.
    test_limit: score on this many test examples (0 = all), a seeded slice.
    representative_examples: training images calibrating int8.
    tfjs_examples: test images run through TF.js in Node.
    seed: seeds the slices above.
  """
  run_dir: str
  model_name: str
  export_dir: str = "exports"
  formats: Tuple[str, ...] = FORMATS
  data_dir: str = ""
  test_limit: int = 0
  representative_examples: int = 500
  tfjs_examples: int = 256
  seed: int = 0

  def validate(self) -> None:
    serving.check_model_name(self.model_name)
    unknown = sorted(set(self.formats) - set(FORMATS))
    if unknown:
      raise UserError(f"unknown export format {unknown[0]!r}; choose from: "
                      f"{', '.join(FORMATS)}")
    if "saved_model" not in self.formats:
      raise UserError("the saved_model format is required: TFLite and TF.js "
                      "are converted from it")
    if (self.test_limit < 0 or self.representative_examples < 1 or
        self.tfjs_examples < 1):
      raise UserError("test_limit must be >= 0, representative_examples and "
                      "tfjs_examples >= 1")


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(logits.argmax(-1) == labels))


def _agreement(logits: np.ndarray, reference: np.ndarray) -> float:
  return float(np.mean(logits.argmax(-1) == reference.argmax(-1)))


def _test_slice(run: TrainedRun, limit: int, seed: int):
  ds = run.data()
  if limit and limit < len(ds.y_test):
    pick = np.sort(np.random.default_rng(seed).permutation(
        len(ds.y_test))[:limit])
    return ds.x_test[pick], ds.y_test[pick]
  return ds.x_test, ds.y_test


def _files(version_dir: str) -> Dict[str, int]:
  sizes = {}
  for root, _, names in os.walk(version_dir):
    for name in names:
      path = os.path.join(root, name)
      sizes[os.path.relpath(path, version_dir)] = os.path.getsize(path)
  return dict(sorted(sizes.items()))


def export_version(run: TrainedRun, config: ExportConfig) -> Tuple[str, int]:
  """Writes the SavedModel, then the formats converted from it, as the next
  version; returns (path, version)."""

  def write(folder: str) -> None:
    serving.save_serving_model(run.model, run.normalization, folder)
    if "tflite" in config.formats:
      representative = tflite.representative_pixels(
          run.data().x_train, config.representative_examples, config.seed)
      for flavour in tflite.FLAVOURS:
        tflite.write_tflite(
            tflite.convert(folder, flavour, representative),
            os.path.join(folder, "tflite", f"model_{flavour}.tflite"))
    if "tfjs" in config.formats:
      tfjs.convert(folder, os.path.join(folder, "tfjs"))

  return serving.write_version(config.export_dir, config.model_name, write)


def _check(passed: bool, what: str, failures: List[str]) -> bool:
  if not passed:
    failures.append(what)
  return passed


def measure(run: TrainedRun, config: ExportConfig, version_dir: str
            ) -> Dict[str, Any]:
  """Every written format's test accuracy and agreement with Keras."""
  x_test, y_test = _test_slice(run, config.test_limit, config.seed)
  images = serving.to_uint8(x_test)
  # Every exported format takes 8-bit pixels, so Keras is scored on the
  # same 8-bit images: identical to the float test set for datasets stored
  # as bytes (MNIST, USPS, CIFAR), rounded for others (8x8 digits are 0..16).
  pixels_as_float = images.astype(np.float32) / 255.0
  exact = bool(np.array_equal(pixels_as_float, x_test))
  keras = predict_logits(run.model, pixels_as_float, run.normalization)
  metrics: Dict[str, Any] = {
      "test_examples": int(len(y_test)),
      "reported_test_accuracy": run.reported_accuracy(),
      "keras_test_accuracy": _accuracy(keras, y_test),
      "uint8_inputs_exact": exact,
  }
  if not exact:
    metrics["keras_test_accuracy_float_inputs"] = _accuracy(
        predict_logits(run.model, x_test, run.normalization), y_test)
  failures: List[str] = []
  served = serving.serve_logits(version_dir, images)
  max_diff = float(np.max(np.abs(served - keras)))
  metrics["saved_model"] = {
      "test_accuracy": _accuracy(served, y_test),
      "top1_agreement_with_keras": _agreement(served, keras),
      "max_abs_logit_difference": max_diff,
      "matches_keras": _check(
          _agreement(served, keras) == 1.0 and
          max_diff <= SAVED_MODEL_LOGIT_TOLERANCE,
          "SavedModel differs from Keras", failures)}
  if "tflite" in config.formats:
    pixels = images.astype(np.float32)
    sizes = {}
    for flavour, max_drop in (("float", TFLITE_FLOAT_MAX_DROP),
                              ("int8", TFLITE_INT8_MAX_DROP)):
      path = os.path.join(version_dir, "tflite", f"model_{flavour}.tflite")
      logits = tflite.tflite_logits(path, pixels)
      accuracy = _accuracy(logits, y_test)
      sizes[flavour] = os.path.getsize(path)
      metrics[f"tflite_{flavour}"] = {
          "test_accuracy": accuracy,
          "accuracy_drop_points": 100 * (metrics["keras_test_accuracy"] -
                                         accuracy),
          "top1_agreement_with_keras": _agreement(logits, keras),
          "bytes": sizes[flavour],
          f"within_{100 * max_drop:g}_point": _check(
              # A drop of exactly the bound passes (float rounding aside).
              metrics["keras_test_accuracy"] - accuracy <= max_drop + 1e-9,
              f"TFLite {flavour} loses more than {100 * max_drop:g} point",
              failures)}
    ratio = sizes["float"] / sizes["int8"]
    metrics["tflite_int8"]["size_ratio_float_over_int8"] = ratio
    metrics["tflite_int8"]["about_4x_smaller"] = _check(
        ratio >= INT8_MIN_SIZE_RATIO, "int8 TFLite is not ~4x smaller",
        failures)
  if "tfjs" in config.formats:
    count = min(config.tfjs_examples, len(y_test))
    logits = tfjs.node_logits(os.path.join(version_dir, "tfjs"),
                              images[:count])
    agreement = _agreement(logits, keras[:count])
    metrics["tfjs"] = {
        "node_examples": count,
        "test_accuracy": _accuracy(logits, y_test[:count]),
        "top1_agreement_with_keras": agreement,
        "max_abs_logit_difference": float(
            np.max(np.abs(logits - keras[:count]))),
        "bytes": sum(size for name, size in _files(version_dir).items()
                     if name.startswith("tfjs" + os.sep)),
        "matches_keras_top1": _check(agreement == 1.0,
                                     "TF.js top-1 differs from Keras",
                                     failures)}
  metrics["failed_checks"] = failures
  return metrics


def run_export(config: ExportConfig, out_dir: str,
               run_config: Dict[str, Any]) -> Dict[str, Any]:
  """Exports, measures, writes the model card and the results files."""
  config.validate()
  run = load_classifier_run(config.run_dir, config.data_dir)
  results_dir = os.path.join(out_dir, config.model_name)
  recorder = RunRecorder(results_dir, {"flags": run_config,
                                       "resolved": config})
  path, version = export_version(run, config)
  logging.info("exported %s", path)
  cli_output = serving.saved_model_cli_show(path)
  serving.check_signature_listed(cli_output, run.input_shape)
  atomic_write_text(os.path.join(results_dir, "saved_model_cli.txt"),
                    f"$ saved_model_cli show --dir {path} --all\n{cli_output}")
  metrics = measure(run, config, path)
  card = card_lib.model_card(run, config.model_name, version, metrics,
                             _files(path))
  atomic_write_json(os.path.join(path, "model_card.json"), card)
  atomic_write_json(os.path.join(results_dir, "model_card.json"), card)
  summary = {"model_name": config.model_name, "version": version,
             "export_path": path, "run_dir": config.run_dir,
             "run_kind": run.kind, **metrics}
  recorder.write_summary(summary)
  write_table(out_dir)
  return summary


def _row(summary: Dict[str, Any]) -> List[str]:
  def pct(value):
    return "-" if value is None else f"{100 * value:.2f}"

  def size(value):
    return f"{value / 1e6:.2f} MB" if value else "-"

  tfl_f = summary.get("tflite_float", {})
  tfl_i = summary.get("tflite_int8", {})
  js = summary.get("tfjs", {})
  sm = summary["saved_model"]
  return [
      summary["model_name"], summary["run_kind"], str(summary["version"]),
      f"{summary['test_examples']}", pct(summary["keras_test_accuracy"]),
      (f"{pct(sm['test_accuracy'])} (top-1 agree {pct(sm['top1_agreement_with_keras'])}%, "
       f"max diff {sm['max_abs_logit_difference']:.1e})"),
      pct(tfl_f.get("test_accuracy")), size(tfl_f.get("bytes")),
      pct(tfl_i.get("test_accuracy")), size(tfl_i.get("bytes")),
      (f"{tfl_i['size_ratio_float_over_int8']:.2f}x" if tfl_i else "-"),
      (f"{pct(js['top1_agreement_with_keras'])}% of {js['node_examples']}"
       if js else "-"),
      "all pass" if not summary["failed_checks"] else
      "; ".join(summary["failed_checks"]),
  ]


def write_table(out_dir: str) -> str:
  """Markdown table over every `<out_dir>/*/summary.json`; returns it."""
  header = ["model", "trained", "version", "test examples", "Keras acc %",
            "SavedModel acc % (parity)", "TFLite float acc %", "float size",
            "TFLite int8 acc %", "int8 size", "float/int8 size",
            "TF.js top-1 = Keras", "checks"]
  rows = []
  for name in sorted(os.listdir(out_dir)):
    path = os.path.join(out_dir, name, "summary.json")
    if os.path.isfile(path):
      with open(path) as f:
        rows.append(_row(json.load(f)))
  lines = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  table = "\n".join(lines) + "\n"
  atomic_write_text(os.path.join(out_dir, "table.md"), table)
  return table
