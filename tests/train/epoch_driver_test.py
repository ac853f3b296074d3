"""The epoch driver: seeds, checkpoints and resume, divergence stop, early
stopping, Ctrl-C, recorder rows and TensorBoard scalars."""

import glob
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from fedclf import errors
from fedclf.errors import DivergenceError
from fedclf.results import RunRecorder
from fedclf.results.tensorboard_log import run_tensorboard_dir
from fedclf.train.epoch_driver import DANN_SEED_OFFSET
from fedclf.train.epoch_driver import epoch_seed
from fedclf.train.epoch_driver import EpochDriver
from fedclf.train.epoch_driver import EpochDriverConfig
from fedclf.train.epoch_driver import SSL_SEED_OFFSET


class _Counter:
  """A stand-in training loop: one variable that each epoch moves by an
  amount drawn from the epoch's seed, so resumed runs are checkable."""

  def __init__(self, loss_at=None):
    self.weight = tf.Variable(0.0, dtype=tf.float64)
    self.calls = []
    self.loss_at = loss_at or {}

  def run_epoch(self, epoch, seed):
    self.calls.append((epoch, seed))
    self.weight.assign_add(np.random.default_rng(seed).random())
    return {"loss": self.loss_at.get(epoch, 1.0 / epoch), "accuracy": 0.5}


def _config(tmp_path, epochs=4, **overrides):
  settings = dict(epochs=epochs, seed=3, checkpoint_dir=str(tmp_path / "c"),
                  checkpoint_every=1, log_metrics=("loss",))
  settings.update(overrides)
  return EpochDriverConfig(**settings)


def _tensorboard_scalars(tb_dir):
  scalars = {}
  for path in glob.glob(os.path.join(tb_dir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        scalars.setdefault(value.tag, {})[event.step] = float(
            tf.make_ndarray(value.tensor))
  return scalars


def test_epoch_seed_formula_is_fixed():
  # Changing these changes every run's batches (and old runs' resumes).
  assert epoch_seed(0, 1) == 7919
  assert epoch_seed(5, 3) == (5 * 1_000_003 + 3 * 7919) % (2**31 - 1)
  assert epoch_seed(3, 2, SSL_SEED_OFFSET) == 3_000_009 + 15_838 + 104_729
  assert epoch_seed(10**6, 7, DANN_SEED_OFFSET) == (
      (10**12 + 3 * 10**6 + 7 * 7919 + 524_287) % (2**31 - 1))


def test_runs_epochs_with_their_seeds(tmp_path):
  counter = _Counter()
  driver = EpochDriver(_config(tmp_path, checkpoint_dir=None),
                       {"weight": counter.weight})
  run = driver.run(counter.run_epoch)
  assert counter.calls == [(e, epoch_seed(3, e)) for e in (1, 2, 3, 4)]
  assert run.epochs_run == 4 and not run.stopped_early
  assert [r["epoch"] for r in run.history] == [1, 2, 3, 4]
  assert run.history[1]["loss"] == 0.5 and "epoch_seconds" in run.history[1]


def test_resume_replays_the_uninterrupted_run(tmp_path):
  full = _Counter()
  EpochDriver(_config(tmp_path / "full"), {"weight": full.weight}).run(
      full.run_epoch)
  first = _Counter()
  EpochDriver(_config(tmp_path, epochs=2), {"weight": first.weight}).run(
      first.run_epoch)
  resumed = _Counter()
  driver = EpochDriver(_config(tmp_path, resume=True),
                       {"weight": resumed.weight})
  assert driver.epochs_done == 2  # restored on construction
  assert resumed.weight.numpy() == first.weight.numpy()
  run = driver.run(resumed.run_epoch)
  assert [e for e, _ in resumed.calls] == [3, 4]
  assert [r["epoch"] for r in run.history] == [3, 4] and run.epochs_run == 4
  assert resumed.weight.numpy() == full.weight.numpy()
  # A finished run resumes to nothing.
  again = _Counter()
  run = EpochDriver(_config(tmp_path, resume=True),
                    {"weight": again.weight}).run(again.run_epoch)
  assert run.history == [] and run.epochs_run == 4 and not again.calls


def test_checkpoints_every_n_epochs_and_the_last(tmp_path):
  counter = _Counter()
  EpochDriver(_config(tmp_path, epochs=5, checkpoint_every=2),
              {"weight": counter.weight}).run(counter.run_epoch)
  saved = sorted(p.split(".")[0] for p in os.listdir(tmp_path / "c")
                 if p.endswith(".index"))
  assert saved == ["ckpt-4", "ckpt-5"]  # max two kept: 2 was dropped
  assert tf.train.latest_checkpoint(str(tmp_path / "c")).endswith("ckpt-5")


def test_divergence_stops_with_a_one_line_error_and_keeps_checkpoints(
    tmp_path):
  counter = _Counter(loss_at={2: float("nan")})
  driver = EpochDriver(
      _config(tmp_path, stage="pretraining", log_prefix="ssl_",
              divergence_hint="lower the learning rate"),
      {"weight": counter.weight})
  with pytest.raises(DivergenceError) as error:
    driver.run(counter.run_epoch)
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith("ssl_pretraining diverged at epoch 2 (loss nan)")
  assert "lower the learning rate; last good checkpoint in" in message
  assert tf.train.latest_checkpoint(str(tmp_path / "c")).endswith("ckpt-1")


def test_infinite_metric_without_checkpoints_diverges_too(tmp_path):
  counter = _Counter(loss_at={1: math.inf})
  driver = EpochDriver(_config(tmp_path, checkpoint_dir=None),
                       {"weight": counter.weight})
  with pytest.raises(DivergenceError, match=r"epoch 1 \(loss inf\); lower "
                     r"the learning rate$"):
    driver.run(counter.run_epoch)


def test_should_stop_ends_the_run_after_its_checkpoint(tmp_path):
  counter = _Counter()
  run = EpochDriver(_config(tmp_path, epochs=10),
                    {"weight": counter.weight}).run(
                        counter.run_epoch, should_stop=lambda e: e == 3)
  assert run.stopped_early and run.epochs_run == 3
  assert tf.train.latest_checkpoint(str(tmp_path / "c")).endswith("ckpt-3")


def test_rows_learning_rate_and_tensorboard(tmp_path):
  recorder = RunRecorder(str(tmp_path / "run"), {})
  optimizer = tf.keras.optimizers.SGD(0.25)
  counter = _Counter()
  driver = EpochDriver(_config(tmp_path, epochs=3, metric_prefix="probe_"),
                       {"weight": counter.weight})
  driver.run(counter.run_epoch, evaluate=lambda e: {"val_accuracy": e / 10},
             optimizer=optimizer, recorder=recorder,
             tensorboard_dir=run_tensorboard_dir(recorder))
  rows = recorder.read_metrics()
  assert [r["epoch"] for r in rows] == [1, 2, 3]
  assert rows[2]["probe_loss"] == pytest.approx(1 / 3)
  assert rows[2]["probe_val_accuracy"] == pytest.approx(0.3)
  assert rows[0]["probe_learning_rate"] == 0.25
  assert "probe_epoch_seconds" in rows[0]
  tb_dir = str(tmp_path / "run" / "tb")
  assert run_tensorboard_dir(recorder) == tb_dir
  scalars = _tensorboard_scalars(tb_dir)
  # The shared tags of fedclf.results.tensorboard_log, in the stage "probe".
  assert set(scalars) == {
      "probe/train/loss", "probe/other/accuracy", "probe/validation/accuracy",
      "probe/optimizer/learning_rate", "probe/throughput/seconds"}
  assert scalars["probe/validation/accuracy"] == pytest.approx(
      {1: 0.1, 2: 0.2, 3: 0.3})


def test_no_tensorboard_without_a_run_folder():
  assert run_tensorboard_dir(None) is None


@pytest.mark.parametrize("interrupt", [
    KeyboardInterrupt(),
    RuntimeError("MISMATCH of original and normalized active exception types"
                 ": ORIGINAL _NotOkStatusException REPLACED BY "
                 "KeyboardInterrupt"),
    # SIGTERM (fedclf.process_exit): the same stop, its own exit status.
    errors.Terminated(),
    RuntimeError("MISMATCH of original and normalized active exception types"
                 ": ORIGINAL _NotOkStatusException REPLACED BY Terminated")])
def test_ctrl_c_keeps_the_last_checkpoint_and_resumes(tmp_path, interrupt):
  full = _Counter()
  EpochDriver(_config(tmp_path / "full"), {"weight": full.weight}).run(
      full.run_epoch)
  killed = _Counter()

  def run_epoch(epoch, seed):
    out = killed.run_epoch(epoch, seed)
    if epoch == 3:  # mid-epoch: the weights hold part of epoch 3
      raise interrupt
    return out

  with pytest.raises(KeyboardInterrupt) as stopped:
    EpochDriver(_config(tmp_path), {"weight": killed.weight}).run(run_epoch)
  assert type(stopped.value) is type(errors.as_interrupt(interrupt))
  assert tf.train.latest_checkpoint(str(tmp_path / "c")).endswith("ckpt-2")
  resumed = _Counter()
  EpochDriver(_config(tmp_path, resume=True), {"weight": resumed.weight}).run(
      resumed.run_epoch)
  assert resumed.weight.numpy() == full.weight.numpy()


def test_other_errors_pass_through(tmp_path):
  def broken(epoch, seed):
    raise RuntimeError("a real bug")

  with pytest.raises(RuntimeError, match="a real bug"):
    EpochDriver(_config(tmp_path), {}).run(broken)


def test_epoch_is_the_drivers_checkpoint_name(tmp_path):
  with pytest.raises(ValueError, match="'epoch'"):
    EpochDriver(_config(tmp_path), {"epoch": tf.Variable(0)})


def test_resumed_recorder_loses_only_this_stages_replayed_rows(tmp_path):
  recorder = RunRecorder(str(tmp_path / "run"), {})
  EpochDriver(_config(tmp_path, epochs=2), {}).run(_Counter().run_epoch,
                                                    recorder=recorder)
  # Rows the killed run logged after its epoch-2 checkpoint, and another
  # stage's rows, which must stay.
  recorder.log_metrics(3, {"loss": 0.3, "epoch_seconds": 1.0}, "epoch")
  recorder.log_metrics(1, {"probe_loss": 0.1, "probe_epoch_seconds": 1.0},
                       "epoch")
  recorder.log_metrics(4, {"loss": 0.4, "epoch_seconds": 1.0}, "epoch")
  resumed = RunRecorder(str(tmp_path / "run"), {}, resume=True)
  EpochDriver(_config(tmp_path, epochs=4, resume=True), {}).run(
      _Counter().run_epoch, recorder=resumed)
  rows = resumed.read_metrics()
  assert [(r["epoch"], "probe_loss" in r) for r in rows] == [
      (1, False), (2, False), (1, True), (3, False), (4, False)]
  assert rows[-1]["loss"] == 1.0 / 4  # replayed, not the killed run's


def test_fresh_recorder_rows_are_never_dropped(tmp_path):
  recorder = RunRecorder(str(tmp_path / "run"), {})
  for _ in range(2):  # one stage twice, no checkpoints: both runs' rows
    EpochDriver(_config(tmp_path, epochs=2, checkpoint_dir=None), {}).run(
        _Counter().run_epoch, recorder=recorder)
  assert [r["epoch"] for r in recorder.read_metrics()] == [1, 2, 1, 2]
