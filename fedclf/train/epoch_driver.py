"""The one epoch driver of every centralized loop.

Supervised training (`fedclf.train.loop`), SSL pretraining
(`fedclf.ssl.pretrain`) and centralized adaptation (`fedclf.adapt.methods.
dann`) differ only in what one epoch does. `EpochDriver` does the rest, so
it behaves the same everywhere:

- the epoch counter and the checkpoints (the epoch variable is saved as
  `epoch` beside the caller's objects, under the caller's names, so
  checkpoints written before this module existed still resume);
- resuming from the latest checkpoint;
- each epoch's seed, derived from (seed, epoch) so that a resumed run
  replays exactly the batches of the uninterrupted one;
- the divergence stop: a non-finite training metric raises
  `DivergenceError` with a one-line message (checkpoints are kept);
- one progress step (`fedclf.results.progress`: a plain log line with the
  ETA, or a live bar on a terminal), one `RunRecorder` row and one
  TensorBoard scalar per metric per epoch (tags of `fedclf.results.tensorboard_log`), each epoch's row
  once even across kills and resumes (see `EpochDriver.run`);
- an early-stopping hook, and Ctrl-C (see `EpochDriver.run`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from absl import logging
import tensorflow as tf

from fedclf.errors import DivergenceError
from fedclf.errors import as_interrupt
from fedclf.errors import is_interrupt
from fedclf.errors import UnreadableCheckpointError
from fedclf.results import RunRecorder
from fedclf.results.checkpoint_setting import check_setting
from fedclf.results.checkpoint_setting import parse_setting_text
from fedclf.results.checkpoint_setting import resume_newest_readable
from fedclf.results.checkpoint_setting import setting_text
from fedclf.results.progress import Step
from fedclf.results.progress import StepProgress
from fedclf.results.tensorboard_log import stage_name
from fedclf.results.tensorboard_log import TensorBoardLog

# (epoch, epoch seed) -> that epoch's training metrics (all must be finite).
RunEpochFn = Callable[[int, int], Dict[str, float]]
# epoch -> metrics measured after the epoch (validation, diagnostics).
EvaluateFn = Callable[[int], Dict[str, float]]
# epoch -> whether to stop after it (early stopping).
ShouldStopFn = Callable[[int], bool]

# Seed offsets: each loop's shuffles differ from the others' for one seed.
SUPERVISED_SEED_OFFSET = 0
SSL_SEED_OFFSET = 104_729
DANN_SEED_OFFSET = 524_287


def epoch_seed(seed: int, epoch: int, offset: int = 0) -> int:
  """Epoch `epoch`'s seed of a run seeded with `seed`.

  The formula is fixed: changing it changes every run's batch order.
  """
  return (seed * 1_000_003 + epoch * 7919 + offset) % (2**31 - 1)


def learning_rate_now(optimizer: tf.keras.optimizers.Optimizer) -> float:
  """The learning rate of the optimizer's next step (schedules included)."""
  lr = optimizer.learning_rate
  return float(lr(optimizer.iterations) if callable(lr) else lr)


# The checkpoint name of the run's setting (see
# fedclf.results.checkpoint_setting), beside "epoch" and the caller's.
SETTING_NAME = "run_setting"
_SETTING_KEY = f"{SETTING_NAME}/.ATTRIBUTES/VARIABLE_VALUE"


def checkpoint_manager(ckpt: tf.train.Checkpoint,
                       checkpoint_dir: Optional[str], every: int,
                       resume: bool, epoch: tf.Variable,
                       log_prefix: str = "",
                       setting: Optional[Mapping[str, Any]] = None
                       ) -> Optional[tf.train.CheckpointManager]:
  """A manager keeping the last two checkpoints (None when checkpoints are
  off); with `resume`, restores the newest readable one into `ckpt` first
  (an unreadable newer one is skipped with a warning). `setting`: the
  run's, refused when a checkpoint holds another."""
  if not checkpoint_dir or not every:
    return None
  manager = tf.train.CheckpointManager(ckpt, checkpoint_dir, max_to_keep=2)
  if resume:
    found = resume_newest_readable(
        _checkpoints_newest_first(manager, checkpoint_dir),
        lambda path: _restore(ckpt, path, setting))
    if found is not None:
      logging.info("%sresumed from %s (epoch %d)", log_prefix, found[0],
                   int(epoch.numpy()))
  return manager


def _checkpoints_newest_first(manager: tf.train.CheckpointManager,
                              checkpoint_dir: str) -> List[str]:
  """The checkpoints the manager's state file names, newest first; when it
  names none (missing or unreadable), every `ckpt-N` in the folder."""
  if manager.checkpoints:
    return list(reversed(manager.checkpoints))
  if not os.path.isdir(checkpoint_dir):
    return []
  numbers = [int(m.group(1)) for m in
             (re.fullmatch(r"ckpt-(\d+)\.index", name)
              for name in os.listdir(checkpoint_dir)) if m]
  return [os.path.join(checkpoint_dir, f"ckpt-{n}")
          for n in sorted(numbers, reverse=True)]


def _restore(ckpt: tf.train.Checkpoint, path: str,
             setting: Optional[Mapping[str, Any]]) -> None:
  """Restores the checkpoint at `path` into `ckpt` once it is known to be
  readable whole and of this run's setting."""
  try:
    # Every tensor, so that each one's checksum is verified now: objects
    # built later (optimizer slots) are restored lazily, past any check.
    reader = tf.train.load_checkpoint(path)
    values = {name: reader.get_tensor(name)
              for name in reader.get_variable_to_dtype_map()}
  except Exception as e:  # pylint: disable=broad-except
    # Truncated or garbled: the reader raises OpErrors, IndexError, ...
    raise UnreadableCheckpointError(
        f"cannot read checkpoint {path}: {type(e).__name__}: "
        f"{' '.join(str(e).split())[:300]}") from None
  stored = values.get(_SETTING_KEY, b"")
  check_setting(path, parse_setting_text(path, stored.decode()
                                         if isinstance(stored, bytes)
                                         else str(stored)), setting)
  try:
    ckpt.restore(path)
  except (tf.errors.OpError, ValueError) as e:
    raise UnreadableCheckpointError(
        f"cannot restore checkpoint {path}: "
        f"{' '.join(str(e).split())[:300]}") from None


def is_stage_row(row: Mapping[str, Any], metric_prefix: str) -> bool:
  """Whether `row` of a metrics.jsonl is an epoch row of the driver stage
  whose metrics carry `metric_prefix`.

  Every driver row has the step "epoch" and `{metric_prefix}epoch_seconds`;
  no other row of a run has that column as long as the stages sharing its
  recorder have distinct prefixes (as they must, or their curves would mix).
  Rows written before stages were told apart this way match too, so runs
  killed by older versions resume cleanly.
  """
  return "epoch" in row and f"{metric_prefix}epoch_seconds" in row


def last_epoch_metrics(history: List[Dict[str, float]], epochs_run: int,
                       recorder: Optional[RunRecorder],
                       metric_prefix: str) -> Dict[str, float]:
  """The metrics of a stage's last epoch: its `EpochRun.history`'s last
  row, or, when this call ran no epoch (resumed after the stage had
  finished: killed while evaluating), the stage's row of that epoch in
  metrics.jsonl, prefix dropped. {} when neither has it."""
  if history:
    return history[-1]
  if not isinstance(recorder, RunRecorder):
    return {}
  for row in reversed(recorder.read_metrics()):
    if is_stage_row(row, metric_prefix) and row["epoch"] == epochs_run:
      return {k[len(metric_prefix):]: v for k, v in row.items()
              if k.startswith(metric_prefix) or k == "epoch"}
  return {}


@dataclasses.dataclass(frozen=True)
class EpochDriverConfig:
  """What an `EpochDriver` runs and how it reports.

  Attributes:
    epochs: the last epoch; a resumed run continues to it.
    seed: the run's seed (see `epoch_seed`).
    seed_offset: sets this loop's epoch seeds apart from other loops'.
    checkpoint_dir: where checkpoints go (None: no checkpoints).
    checkpoint_every: epochs between checkpoints (0: none); the last epoch
      is always saved.
    resume: restore the latest checkpoint in `checkpoint_dir` first.
    stage: what diverged, in the error ("training", "pretraining").
    metric_prefix: prefixes the metric names of recorder rows and names
      the stage of the TensorBoard tags (`fedclf.results.tensorboard_log`:
      "probe_" -> "probe/train/loss"); also tells this stage's rows from
      other stages' in a shared metrics.jsonl (`is_stage_row`), so stages
      sharing a recorder need distinct prefixes.
    log_prefix: prefixes log lines and the divergence message.
    log_metrics: the metrics the per-epoch log line shows, in order.
    divergence_hint: what to try after a divergence.
    examples_per_epoch: examples one epoch trains on (for throughput).
    setting: the run's setting (see `fedclf.results.run_folder.
      run_setting`), stored in every checkpoint; resuming from a checkpoint
      of another setting is refused. None: not stored, not checked.
  """
  epochs: int
  seed: int
  seed_offset: int = SUPERVISED_SEED_OFFSET
  checkpoint_dir: Optional[str] = None
  checkpoint_every: int = 1
  resume: bool = False
  stage: str = "training"
  metric_prefix: str = ""
  log_prefix: str = ""
  log_metrics: Sequence[str] = ()
  divergence_hint: str = "lower the learning rate"
  examples_per_epoch: int = 0
  setting: Optional[Mapping[str, Any]] = None


@dataclasses.dataclass
class EpochRun:
  """What `EpochDriver.run` did.

  Attributes:
    epochs_run: epochs done in all, resumed ones included.
    stopped_early: `should_stop` ended the run.
    train_seconds: time in `run_epoch` in this call.
    examples_per_second: training throughput over the run's epochs
      (restored ones included when a `RunRecorder` holds their rows).
    history: one row per epoch run in this call ("epoch" and the metrics).
  """
  epochs_run: int
  stopped_early: bool
  train_seconds: float
  examples_per_second: float
  history: List[Dict[str, float]]


class EpochDriver:
  """Runs epochs of one training loop: checkpoints, resume, seeds,
  divergence stop, progress lines, rows and TensorBoard.

  Constructing it restores the latest checkpoint (with `config.resume`),
  so that the caller can read restored state before `run`.
  """

  def __init__(self, config: EpochDriverConfig,
               trackables: Mapping[str, object]):
    """Args:
      config: the epochs, seeds, checkpoints and reporting.
      trackables: what the checkpoints hold besides the epoch counter (saved
        as "epoch"), by checkpoint name: models, optimizer, extra state.
    """
    for own in ("epoch", SETTING_NAME):
      if own in trackables:
        raise ValueError(f"the checkpoint name {own!r} is the driver's own")
    self.config = config
    self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    # A string variable, so the setting rides in TF's own checkpoint files.
    setting = setting_text(config.setting)
    self.setting = tf.Variable(setting, dtype=tf.string, trainable=False)
    self.checkpoint = tf.train.Checkpoint(
        epoch=self.epoch, **{SETTING_NAME: self.setting}, **trackables)
    self.manager = checkpoint_manager(self.checkpoint, config.checkpoint_dir,
                                      config.checkpoint_every, config.resume,
                                      self.epoch, config.log_prefix,
                                      config.setting)
    # The restore brought the checkpoint's record back; the next saves carry
    # this run's (flags only one of them has may differ).
    self.setting.assign(setting)

  @property
  def epochs_done(self) -> int:
    """Epochs completed so far (restored ones included)."""
    return int(self.epoch.numpy())

  def run(self,
          run_epoch: RunEpochFn,
          evaluate: Optional[EvaluateFn] = None,
          should_stop: Optional[ShouldStopFn] = None,
          optimizer: Optional[tf.keras.optimizers.Optimizer] = None,
          recorder: Optional[RunRecorder] = None,
          tensorboard_dir: Optional[str] = None) -> EpochRun:
    """Runs the epochs after the restored one, up to `config.epochs`.

    Each epoch: `run_epoch(epoch, seed)`, the divergence check on its
    metrics, the optimizer's learning rate, `evaluate(epoch)`, the log line,
    the recorder row and TensorBoard scalars, the checkpoint if due, then
    `should_stop(epoch)`. The row is logged before the checkpoint, so a
    killed run may have logged rows for epochs after its last checkpoint
    (for every epoch, in a stage without checkpoints). With a resumed
    `RunRecorder`, this stage's rows after the restored epoch are dropped
    first (all of them when it starts from scratch): the epochs replayed
    log them again, so each epoch's row is in metrics.jsonl once (after
    any rows logged meanwhile). Other stages' rows stay as they are, in
    order.

    Ctrl-C (a KeyboardInterrupt, or TensorFlow's RuntimeError wrapping one)
    stops the run as a KeyboardInterrupt (of the same subclass for SIGTERM
    and a closed output, fedclf.errors). No checkpoint is written then: the
    models hold part of an epoch, and a resumed run replays only from whole
    epochs; it continues from the last checkpoint, which is logged.

    Args:
      run_epoch: trains one epoch; returns its training metrics.
      evaluate: metrics measured after the epoch (None: none).
      should_stop: early stopping, asked after the epoch's checkpoint.
      optimizer: its learning rate is reported as "learning_rate".
      recorder: gets one row per epoch (step name "epoch").
      tensorboard_dir: where the scalars go (None: no TensorBoard).

    Returns:
      The `EpochRun`.

    Raises:
      DivergenceError: a training metric is NaN or infinite.
      KeyboardInterrupt: Ctrl-C, SIGTERM, a closed output.
    """
    writer = (TensorBoardLog(tensorboard_dir,
                             stage_name(self.config.metric_prefix))
              if tensorboard_dir else None)
    run = EpochRun(self.epochs_done, False, 0.0, 0.0, [])
    self._drop_replayed_rows(recorder)
    # Counted from here: restored epochs took no time in this process.
    self._reporter = StepProgress(f"{self.config.log_prefix}epoch",
                                  self.config.epochs, self.epochs_done)
    try:
      self._run_epochs(run, run_epoch, evaluate, should_stop, optimizer,
                       recorder, writer)
    except (KeyboardInterrupt, RuntimeError) as e:
      if not is_interrupt(e):
        raise
      latest = self.manager.latest_checkpoint if self.manager else None
      logging.warning("%sinterrupted after epoch %d; %s",
                      self.config.log_prefix, self.epochs_done,
                      f"--resume continues from {latest}" if latest else
                      "no checkpoint to resume from")
      raise as_interrupt(e) from None
    finally:
      self._reporter.close()
      if writer is not None:
        writer.close()
    run.epochs_run = self.epochs_done
    run.examples_per_second = self._throughput(run, recorder)
    return run

  def _throughput(self, run: EpochRun,
                  recorder: Optional[RunRecorder]) -> float:
    """Training examples per second over the run's epochs: from this
    stage's rows in a `RunRecorder`'s metrics.jsonl, which a resumed run
    keeps for its restored epochs (so resuming a finished run, with nothing
    left to train, does not report 0); else over this call's epochs."""
    epochs, seconds = len(run.history), run.train_seconds
    if isinstance(recorder, RunRecorder):
      prefix = self.config.metric_prefix
      rows = [r for r in recorder.read_metrics() if is_stage_row(r, prefix)]
      if rows:
        epochs = len(rows)
        seconds = sum(r[f"{prefix}epoch_seconds"] for r in rows)
    return self.config.examples_per_epoch * epochs / max(seconds, 1e-9)

  def _run_epochs(self, run: EpochRun, run_epoch: RunEpochFn,
                  evaluate: Optional[EvaluateFn],
                  should_stop: Optional[ShouldStopFn],
                  optimizer: Optional[tf.keras.optimizers.Optimizer],
                  recorder: Optional[RunRecorder],
                  writer: Optional[TensorBoardLog]) -> None:
    config = self.config
    for epoch in range(self.epochs_done + 1, config.epochs + 1):
      t0 = time.time()
      row = dict(run_epoch(epoch, epoch_seed(config.seed, epoch,
                                             config.seed_offset)))
      epoch_seconds = time.time() - t0
      run.train_seconds += epoch_seconds
      self._check_finite(epoch, row)
      if optimizer is not None:
        row["learning_rate"] = learning_rate_now(optimizer)
      row["epoch_seconds"] = epoch_seconds
      if evaluate is not None:
        row.update(evaluate(epoch))
      run.history.append({"epoch": epoch, **row})
      self._report(epoch, row, recorder, writer)
      self.epoch.assign(epoch)
      if self.manager and (epoch % config.checkpoint_every == 0 or
                           epoch == config.epochs):
        self.manager.save(checkpoint_number=epoch)
      if should_stop is not None and should_stop(epoch):
        run.stopped_early = True
        break

  def _drop_replayed_rows(self, recorder: Optional[RunRecorder]) -> None:
    # A fresh run replays nothing; a stand-in recorder has no file.
    if not (isinstance(recorder, RunRecorder) and recorder.resumed):
      return
    prefix, done = self.config.metric_prefix, self.epochs_done
    dropped = recorder.drop_metrics(
        lambda row: is_stage_row(row, prefix) and int(row["epoch"]) > done)
    if dropped:
      logging.info("%sdropped %d rows of epochs after %d (replayed now)",
                   self.config.log_prefix, dropped, done)

  def _check_finite(self, epoch: int, metrics: Dict[str, float]) -> None:
    bad = [f"{k} {v}" for k, v in metrics.items() if not math.isfinite(v)]
    if not bad:
      return
    latest = self.manager.latest_checkpoint if self.manager else None
    where = f"; last good checkpoint in {self.config.checkpoint_dir}" if (
        latest) else ""
    raise DivergenceError(
        f"{self.config.log_prefix}{self.config.stage} diverged at epoch "
        f"{epoch} ({', '.join(bad)}); {self.config.divergence_hint}{where}")

  def _report(self, epoch: int, row: Dict[str, float],
              recorder: Optional[RunRecorder],
              writer: Optional[TensorBoardLog]) -> None:
    config = self.config
    named = {f"{config.metric_prefix}{k}": v for k, v in row.items()}
    if recorder is not None:
      recorder.log_metrics(epoch, named, "epoch")
    if writer is not None:
      writer.write_row(epoch, row, examples=config.examples_per_epoch)
    shown = [f"{k} {row[k]:.4g}" for k in config.log_metrics if k in row]
    self._reporter.step(Step(epoch, shown, row["epoch_seconds"],
                             config.examples_per_epoch))
