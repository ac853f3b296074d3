"""Run folders: what every fedclf trainer leaves behind (the writer side).

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

`fedclf.run_reader.load_trained_run` reads any of them by its recorded kind: the saved model
as it was trained, its input normalization and its evaluation data. Runs
written before runs recorded their kind are refused with a one-line
UserError asking for a rerun (or --resume) with the current version.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import tensorflow as tf

from fedclf.data.preprocess import Normalization
from fedclf.results.record import atomic_output
from fedclf.results.record import RunRecorder

CLASSIFIER_FILE = "model.keras"
ENCODER_FILE = "encoder.keras"

# How a kind's evaluation data is loaded from its resolved config.
DATASET = "dataset"  # load_dataset(resolved["data"])
TARGET_DOMAIN = "target_domain"  # the target of load_domain_pair(...)


@dataclasses.dataclass(frozen=True)
class RunKind:
  """What a kind of run folder holds.

  Attributes:
    name: the `kind` recorded in summary.json.
    model_file: the saved model's file name in the folder.
    classifier: whether that model outputs class logits (else it is an
      encoder outputting features).
    data: how the evaluation data is loaded (`DATASET`, `TARGET_DOMAIN`).
    reported_accuracy: the summary key of the accuracy the trainer reported
      for the saved model on that data (kNN accuracy for encoders).
  """
  name: str
  model_file: str
  classifier: bool
  data: str
  reported_accuracy: str


_KINDS = (
    RunKind("centralized", CLASSIFIER_FILE, True, DATASET, "test_accuracy"),
    RunKind("federated", CLASSIFIER_FILE, True, DATASET,
            "final_test_accuracy"),
    RunKind("federated_ssl", ENCODER_FILE, False, DATASET,
            "final_knn_accuracy"),
    RunKind("ssl_pretrain", ENCODER_FILE, False, DATASET, "knn_accuracy"),
    RunKind("domain_adaptation", CLASSIFIER_FILE, True, TARGET_DOMAIN,
            "target_accuracy"),
    RunKind("federated_domain_adaptation", CLASSIFIER_FILE, True,
            TARGET_DOMAIN, "target_accuracy"),
    RunKind("federated_domain_mixture", CLASSIFIER_FILE, True, DATASET,
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
