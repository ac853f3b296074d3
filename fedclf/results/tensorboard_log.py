"""TensorBoard logs of fedclf runs: one tag scheme and HParams for all.

Every binary writes its run's TensorBoard events to `<out_dir>/tb`
(`run_tensorboard_dir`), through `TensorBoardLog`, so that `tensorboard
--logdir results/<table>` puts the same curve of any two runs, of any
binaries, on one chart, and its HParams dashboard lists every run (one
session per run folder, `write_hparams`).

The tag scheme (the contract; fedclf's metric names are those of
metrics.jsonl rows, without the stage prefix):

  | tag                                | metrics                           |
  |------------------------------------|-----------------------------------|
  | train/loss                         | train_loss; loss (SSL pretraining)|
  | train/accuracy                     | train_accuracy                    |
  | test/loss, test/accuracy,          | test_loss, test_accuracy,         |
  | test/macro_f1                      | test_macro_f1; in domain          |
  |                                    | adaptation the target's:          |
  |                                    | target_loss, target_accuracy,     |
  |                                    | target_test_accuracy,             |
  |                                    | target_macro_f1                   |
  | test/source_accuracy,              | source_accuracy,                  |
  | test/source_macro_f1               | source_test_accuracy,             |
  |                                    | source_macro_f1                   |
  | test/<domain>_accuracy             | <domain>_test_accuracy            |
  | test/<name>                        | knn_accuracy, linear_probe_*,     |
  |                                    | random_init_*, finetune_accuracy_*|
  |                                    | supervised_accuracy_*             |
  | validation/loss,                   | val_loss, val_accuracy            |
  | validation/accuracy                |                                   |
  | clients/accuracy_mean|p10|p50|p90| | client_accuracy_<s> (per-client   |
  | min                                | accuracy percentiles, federated)  |
  | clients/personalized_accuracy_     | personal_query_accuracy_before,   |
  | before|after                       | personal_query_accuracy_after     |
  | clients/personal_accuracy_<s>,     | personal_accuracy_<s>,            |
  | clients/global_accuracy_<s>        | global_on_clients_accuracy_<s>    |
  |                                    | (clients' own test parts)         |
  | clients/sampled|reported|failed|   | clients_sampled, clients_reported,|
  | nonfinite|stragglers|trained      | clients_failed, clients_nonfinite,|
  |                                    | stragglers, clients_trained       |
  | optimizer/learning_rate            | learning_rate                     |
  | throughput/examples_per_second     | examples_per_second, else computed|
  |                                    | from examples (round rows; epoch  |
  |                                    | rows: the stage's examples per    |
  |                                    | epoch) over the step's seconds    |
  | throughput/seconds                 | round_seconds, epoch_seconds      |
  | throughput/examples                | examples                          |
  | domain/loss, domain/accuracy,      | domain_loss, domain_accuracy,     |
  | domain/lambda, domain/pseudo_labels| lambda, pseudo_labels (DANN, self-|
  |                                    | training)                         |
  | diagnostics/representation_std     | representation_std (SSL)          |
  | communication/upload_bytes|        | upload_bytes,                     |
  | upload_bytes_per_client|           | upload_bytes_per_client,          |
  | download_bytes                     | download_bytes (federated rounds) |
  | communication/sent_to_workers_bytes| bytes/sent_to_workers,            |
  | received_from_workers_bytes|       | bytes/received_from_workers,      |
  | computations_to_workers_bytes      | bytes/computations_to_workers     |
  |                                    | (tff backend: gRPC payloads)      |
  | clients/malicious                  | malicious_reported (attacks)      |
  | other/<name>                       | any other metric                  |

The step is the row's round or epoch. A stage of a multi-stage run (the
`metric_prefix` of its rows: SSL pretraining `ssl_`, probes `probe_`,
fine-tuning `finetune_`, cross-validation folds `fold0_`, ...) prefixes its
tags with its name: `ssl/train/loss`, `probe/train/accuracy`,
`fold0/train/loss`. Bookkeeping columns (round, epoch, wall_seconds,
evaluation_interrupted) are not written.

Cross-validation folds (`baselines.centralized --cv_folds`) are stages of
the run, not runs: their curves are `fold<k>/...` in the run's `tb/`, under
its one HParams session.

Resumed runs: a resumed run replays the rounds or epochs after its last
checkpoint. TensorBoard would show a step written twice (by the killed
process and by the resumed one) twice: its reader's purge of orphaned
steps acts, on TF2 event files, only on a SessionLog.START event, which
`tf.summary` writers never write. So `TensorBoardLog` reads the events
already in its folder first and never writes a (tag, step) at or below the
newest step that tag has there. The replayed values are the same (epochs
and rounds replay from seeded state), and both loops flush a step's row
before they checkpoint it, so every step a resumed run does not replay is
in the events. Likewise `write_hparams` writes
the run's HParams session once: a resumed run keeps the first one (the
flags it started with, e.g. the first --rounds).

HParams: every run writes the dashboard's configuration (its flags and
`HPARAMS_METRICS`) beside its session; TensorBoard reads one of them for a
whole logdir. So in a folder of one binary's runs the dashboard's columns
are all their flags; in a folder mixing binaries, those of one binary
(the others' runs are listed with the flags they share).
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any, Dict, Mapping, Optional, Sequence

from absl import logging
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import metadata as hparams_metadata
import tensorflow as tf

from fedclf.results.record import RunRecorder

_EXACT_TAGS = {
    "train_loss": "train/loss",
    "loss": "train/loss",
    "train_accuracy": "train/accuracy",
    "test_loss": "test/loss",
    "test_accuracy": "test/accuracy",
    "test_macro_f1": "test/macro_f1",
    "target_loss": "test/loss",
    "target_accuracy": "test/accuracy",
    "target_test_accuracy": "test/accuracy",
    "target_macro_f1": "test/macro_f1",
    "source_accuracy": "test/source_accuracy",
    "source_test_accuracy": "test/source_accuracy",
    "source_macro_f1": "test/source_macro_f1",
    "val_loss": "validation/loss",
    "val_accuracy": "validation/accuracy",
    "personal_query_accuracy_before": "clients/personalized_accuracy_before",
    "personal_query_accuracy_after": "clients/personalized_accuracy_after",
    "clients_sampled": "clients/sampled",
    "clients_reported": "clients/reported",
    "clients_failed": "clients/failed",
    "clients_nonfinite": "clients/nonfinite",
    "clients_trained": "clients/trained",
    "stragglers": "clients/stragglers",
    "learning_rate": "optimizer/learning_rate",
    "examples_per_second": "throughput/examples_per_second",
    "round_seconds": "throughput/seconds",
    "epoch_seconds": "throughput/seconds",
    "examples": "throughput/examples",
    "domain_loss": "domain/loss",
    "domain_accuracy": "domain/accuracy",
    "lambda": "domain/lambda",
    "pseudo_labels": "domain/pseudo_labels",
    "representation_std": "diagnostics/representation_std",
    "upload_bytes": "communication/upload_bytes",
    "upload_bytes_per_client": "communication/upload_bytes_per_client",
    "download_bytes": "communication/download_bytes",
    "bytes/sent_to_workers": "communication/sent_to_workers_bytes",
    "bytes/received_from_workers": "communication/received_from_workers_bytes",
    "bytes/computations_to_workers":
        "communication/computations_to_workers_bytes",
    "malicious_reported": "clients/malicious",
}
# (pattern, tag template) for metric families, tried in order.
_PATTERN_TAGS = (
    (re.compile(r"client_accuracy_(\w+)"), r"clients/accuracy_\1"),
    (re.compile(r"(knn_accuracy|linear_probe_\w+|random_init_\w+|"
                r"(?:finetune|supervised)_accuracy_[\w.]+)"), r"test/\1"),
    (re.compile(r"(\w+)_test_accuracy"), r"test/\1_accuracy"),
    (re.compile(r"personal_accuracy_(\w+)"), r"clients/personal_accuracy_\1"),
    (re.compile(r"global_on_clients_accuracy_(\w+)"),
     r"clients/global_accuracy_\1"),
)
# Row columns that are bookkeeping, not metrics.
NOT_METRICS = ("round", "epoch", "step", "wall_seconds",
               "evaluation_interrupted")
THROUGHPUT_TAG = "throughput/examples_per_second"

# The metrics the HParams dashboard offers for every run: the headline ones
# of each binary (federated self-supervised runs' test/accuracy is kNN
# accuracy; ssl_pretrain's are its pretraining loss and its final linear
# probe and kNN accuracy).
HPARAMS_METRICS = (
    ("test/accuracy", "test accuracy"),
    ("test/loss", "test loss"),
    ("train/loss", "train loss"),
    ("ssl/train/loss", "SSL pretraining loss"),
    ("validation/accuracy", "validation accuracy"),
    ("test/linear_probe_accuracy", "linear probe accuracy"),
    ("test/knn_accuracy", "kNN accuracy"),
)


def metric_tag(name: str, stage: str = "") -> str:
  """The TensorBoard tag of metric `name` of a stage (see the table)."""
  tag = _EXACT_TAGS.get(name)
  if tag is None:
    for pattern, template in _PATTERN_TAGS:
      match = pattern.fullmatch(name)
      if match:
        tag = match.expand(template)
        break
    else:
      tag = f"other/{name}"
  return f"{stage}/{tag}" if stage else tag


def stage_name(metric_prefix: str) -> str:
  """The stage of a row prefix: "probe_" -> "probe", "" -> "" (main)."""
  return metric_prefix.strip().rstrip("_:").strip()


def run_tensorboard_dir(recorder: Optional[RunRecorder]) -> Optional[str]:
  """`tb/` in the recorder's run folder, where every binary writes; None
  without a `RunRecorder` (a stand-in has no run folder)."""
  if isinstance(recorder, RunRecorder):
    return os.path.join(recorder.out_dir, "tb")
  return None


def scalar_values(row: Mapping[str, Any], stage: str = "",
                  examples: Optional[float] = None) -> Dict[str, float]:
  """The tags and values a metrics row is written as.

  Args:
    row: metric name -> value (non-numbers are left out).
    stage: the stage's name (see `stage_name`); "" for the run's main one.
    examples: the examples the step trained on, when the row does not say
      (epoch rows), for throughput.
  """
  values = {}
  for name, value in row.items():
    if (name in NOT_METRICS or isinstance(value, bool) or
        not isinstance(value, (int, float))):
      continue
    values[metric_tag(name, stage)] = float(value)
  throughput = metric_tag("examples_per_second", stage)
  seconds = row.get("round_seconds", row.get("epoch_seconds"))
  examples = row.get("examples", examples)
  if throughput not in values and seconds and examples:
    values[throughput] = float(examples) / float(seconds)
  return values


def written_steps(log_dir: str) -> Dict[str, int]:
  """Tag -> the newest step the event files in `log_dir` hold for it."""
  newest: Dict[str, int] = {}
  for path in sorted(glob.glob(os.path.join(log_dir, "*tfevents*"))):
    try:
      for event in event_file_loader.LegacyEventFileLoader(path).Load():
        for value in event.summary.value:
          newest[value.tag] = max(newest.get(value.tag, event.step),
                                  event.step)
    except (tf.errors.OpError, OSError, ValueError) as e:
      # A file cut by a kill: what was read of it counts.
      logging.warning("reading %s: %s", path, e)
  return newest


class TensorBoardLog:
  """One stage's TensorBoard writer in a run's `tb/` folder.

  Writes metrics rows under the shared tag scheme, each (tag, step) once
  even across kills and resumes (see the module docstring).
  """

  def __init__(self, log_dir: str, stage: str = ""):
    self.log_dir = log_dir
    self.stage = stage
    self._written = written_steps(log_dir)
    self._writer = tf.summary.create_file_writer(log_dir)

  def write_row(self, step: int, row: Mapping[str, Any],
                examples: Optional[float] = None) -> None:
    """Writes a round's or epoch's row at `step` and flushes it (a kill
    loses no written step, see `written_steps`)."""
    with self._writer.as_default(step=int(step)):
      for tag, value in scalar_values(row, self.stage, examples).items():
        if self._written.get(tag, -1) >= step:
          continue
        tf.summary.scalar(tag, value)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def log_final_row(recorder: RunRecorder, step: int,
                  row: Mapping[str, Any]) -> None:
  """A run's closing row (its test metrics, measured after the last
  epoch `step`) into metrics.jsonl and the run's TensorBoard folder."""
  recorder.log_metrics(step, dict(row), "epoch")
  log = TensorBoardLog(run_tensorboard_dir(recorder))
  try:
    log.write_row(step, row)
  finally:
    log.close()


def hparam_value(value: Any) -> Any:
  """A flag's value as HParams holds it: strings, numbers and bools as they
  are; None as ""; lists and anything else as JSON text."""
  if value is None:
    return ""
  if isinstance(value, (bool, int, float, str)):
    return value
  return json.dumps(value, sort_keys=True, default=str)


def write_hparams(log_dir: Optional[str], flags: Mapping[str, Any],
                  trial_id: str,
                  metrics: Sequence[tuple] = HPARAMS_METRICS) -> None:
  """Writes the run's HParams session (its flags) and the dashboard's
  configuration (the flags and `metrics`) to `log_dir` (None: nothing),
  unless the folder has a session already (a resumed run).

  Args:
    log_dir: the run's TensorBoard folder (`run_tensorboard_dir`).
    flags: the run's flags, as config.json records them.
    trial_id: names the run in the dashboard; distinct per run (the run
      folder), since HParams groups the sessions of one trial id.
    metrics: (tag, display name) of the metrics the dashboard shows.
  """
  if log_dir is None or hparams_metadata.SESSION_START_INFO_TAG in (
      written_steps(log_dir)):
    return
  values = {name: hparam_value(value) for name, value in sorted(flags.items())}
  writer = tf.summary.create_file_writer(log_dir)
  try:
    with writer.as_default(step=0):
      # TensorBoard reads the dashboard's configuration from one run of the
      # logdir: every run writes it, with its own flags.
      hp.hparams_config(
          hparams=[hp.HParam(name) for name in values],
          metrics=[hp.Metric(tag, display_name=display)
                   for tag, display in metrics])
      hp.hparams(values, trial_id=trial_id)
    writer.flush()
  finally:
    writer.close()


def start_run_log(recorder: RunRecorder, flags: Mapping[str, Any]) -> None:
  """Writes the HParams session of the run `recorder` writes (its folder
  names the trial)."""
  write_hparams(run_tensorboard_dir(recorder), flags,
                os.path.abspath(recorder.out_dir))
