"""The model card written next to every exported version.

What a consumer of the exported model needs without the training run at
hand: what goes in and comes out, the preprocessing baked in, the data and
algorithm it was trained with, the metrics measured on each exported
format, and the fedclf version and git commits of training and export
(from `fedclf.results.record`, the same record every run writes).
"""

from __future__ import annotations

from typing import Any, Dict

from fedclf.export.serving import PIXELS_SIGNATURE
from fedclf.export.serving import SERVING_SIGNATURE
from fedclf.results import environment_info
from fedclf.run_reader import TrainedRun


def _federation(run: TrainedRun) -> Dict[str, Any]:
  simulation = run.resolved["simulation"]
  return {
      "algorithm": simulation["algorithm"],
      "algorithm_config": simulation["algorithm_config"],
      # Runs recorded before algorithms owned their params lack it.
      "algorithm_params": simulation.get("algorithm_params"),
      "backend": simulation["backend"],
      "num_clients": simulation["num_clients"],
      "clients_per_round": simulation["clients_per_round"],
      "partitioner": run.resolved["partitioner"],
      "partition": run.resolved["partition"],
      "rounds_run": run.summary.get("rounds_run"),
  }


def _training_algorithm(run: TrainedRun) -> Dict[str, Any]:
  """How the model was trained, by the run's recorded kind."""
  resolved = run.resolved
  if run.kind == "federated":
    return {"kind": run.kind, **_federation(run)}
  if run.kind == "federated_domain_mixture":
    return {"kind": run.kind, "domains": run.summary.get("domains"),
            **_federation(run)}
  if run.kind == "domain_adaptation":
    return {"kind": run.kind, "method": resolved["method"],
            "source": resolved["source"], "target": resolved["target"],
            "training": resolved["adapt"]}
  if run.kind == "federated_domain_adaptation":
    return {"kind": run.kind, "method": resolved["method"],
            "source": resolved["source"], "target": resolved["target"],
            "federation": run.record["config"].get("federated"),
            "rounds_run": run.summary.get("rounds_run")}
  return {"kind": run.kind, "training": resolved["train"],
          "val_fraction": resolved.get("val_fraction"),
          "epochs_run": run.summary.get("epochs_run")}


def model_card(run: TrainedRun, model_name: str, version: int,
               metrics: Dict[str, Any], files: Dict[str, int]
               ) -> Dict[str, Any]:
  """The card as a JSON-able dict (`files`: relative path -> bytes)."""
  shape = list(run.input_shape)
  exported = environment_info()
  return {
      "model_name": model_name,
      "version": version,
      "layout": "TensorFlow Serving: <export_dir>/<model_name>/<version>/",
      "signatures": {
          SERVING_SIGNATURE: {
              "inputs": {"images": f"uint8 [batch, {', '.join(map(str, shape))}]"
                                   ", raw pixels 0..255"},
              "outputs": {
                  "logits": f"float32 [batch, {run.num_classes}]",
                  "probabilities": f"float32 [batch, {run.num_classes}], "
                                   "softmax of the logits",
                  "classes": "int64 [batch], the arg max"},
          },
          PIXELS_SIGNATURE: {
              "inputs": {"pixels": f"float32 [batch, {', '.join(map(str, shape))}]"
                                   ", pixel values 0..255"},
              "outputs": {"logits": f"float32 [batch, {run.num_classes}]"},
              "note": "the signature TFLite and TF.js are converted from",
          },
      },
      "preprocessing": {
          "formula": "(pixels / 255 - mean) / std, per channel, inside the "
                     "model",
          "mean": list(run.normalization.mean),
          "std": list(run.normalization.std),
          "recorded_by_training_run": True,
      },
      "class_names": run.data().class_names,
      "data": run.record["config"].get("dataset",
                                       run.record["config"].get("domains")),
      "model": {"name": run.resolved["model_name"],
                "config": run.resolved["model"]},
      "training": _training_algorithm(run),
      "training_run": {
          "run_dir": run.run_dir,
          "kind": run.kind,
          "weights_from": run.model_path,
          "git": run.record.get("git"),
          "versions": run.record.get("versions"),
          "started_utc": run.record.get("started_utc"),
          "command": run.record.get("command"),
      },
      "metrics": metrics,
      "files": files,
      "fedclf_version": exported["versions"]["fedclf"],
      "export": {"git": exported["git"], "versions": exported["versions"],
                 "exported_utc": exported["started_utc"],
                 "command": exported["command"]},
  }
