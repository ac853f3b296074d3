"""The shared training loop: learning, schedules, early stopping, resume,
divergence."""

import numpy as np
import pytest
import tensorflow as tf

from fedclf.data.preprocess import AugmentConfig
from fedclf.data.preprocess import Normalization
from fedclf.errors import DivergenceError
from fedclf.errors import UserError
from fedclf.results import RunRecorder
from fedclf.train import build_optimizer
from fedclf.train import OptimizerConfig
from fedclf.train import train_classifier
from fedclf.train import TrainConfig
from fedclf.train.optimizers import WarmupSchedule
from tests.ctrl_c import CtrlCAfterRow
from tests.ctrl_c import CtrlCAt
from tests.ctrl_c import rows_without_clock


def _blobs(n=200, seed=0):
  rng = np.random.default_rng(seed)
  y = np.arange(n) % 2
  x = rng.normal(0, 0.3, (n, 4, 4, 1)).astype(np.float32) + y[:, None, None,
                                                               None]
  return np.clip(x, 0, 1), y


def _model(seed=0):
  tf.keras.utils.set_random_seed(seed)
  return tf.keras.Sequential([tf.keras.layers.Flatten(input_shape=(4, 4, 1)),
                              tf.keras.layers.Dense(2)])


def test_learns_and_records(tmp_path):
  x, y = _blobs()
  rec = RunRecorder(str(tmp_path), {})
  result = train_classifier(
      _model(), (x, y), (x[:50], y[:50]), Normalization.from_images(x), 2,
      TrainConfig(epochs=3, batch_size=16,
                  optimizer=OptimizerConfig("momentum", 0.05)), rec)
  assert result.epochs_run == 3 and result.best_val_accuracy > 0.9
  rows = rec.read_metrics()
  assert [r["epoch"] for r in rows] == [1, 2, 3]
  assert rows[-1]["train_accuracy"] > 0.9 and "val_accuracy" in rows[-1]


def test_same_seed_same_weights():
  x, y = _blobs()
  cfg = TrainConfig(epochs=2, batch_size=16, seed=5)
  runs = []
  for _ in range(2):
    m = _model()
    train_classifier(m, (x, y), None, Normalization.from_images(x), 2, cfg)
    runs.append(m.get_weights())
  for a, b in zip(*runs):
    np.testing.assert_array_equal(a, b)


def test_resume_replays_the_uninterrupted_run(tmp_path):
  x, y = _blobs()
  norm = Normalization.from_images(x)
  full = _model()
  train_classifier(full, (x, y), None, norm, 2,
                   TrainConfig(epochs=4, batch_size=16, seed=1))
  part = _model()
  ckpt = str(tmp_path / "ckpt")
  train_classifier(part, (x, y), None, norm, 2,
                   TrainConfig(epochs=2, batch_size=16, seed=1), None, ckpt)
  resumed = _model(seed=99)  # different init: the checkpoint must win
  result = train_classifier(resumed, (x, y), None, norm, 2,
                            TrainConfig(epochs=4, batch_size=16, seed=1), None,
                            ckpt, resume=True)
  assert [h["epoch"] for h in result.history] == [3, 4]
  for a, b in zip(full.get_weights(), resumed.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_early_stopping_restores_best():
  x, y = _blobs()
  flipped = (x[:40], 1 - y[:40])  # validation gets worse as training works
  result = train_classifier(
      _model(), (x, y), flipped, Normalization.from_images(x), 2,
      TrainConfig(epochs=20, batch_size=16, early_stopping_patience=2))
  assert result.stopped_early and result.epochs_run < 20
  assert result.epochs_run - result.best_epoch == 2


def test_divergence_is_a_user_error_and_keeps_checkpoints(tmp_path):
  x, y = _blobs()
  x = x.copy()
  x[0, 0, 0, 0] = np.nan
  with pytest.raises(DivergenceError, match="diverged at epoch 1"):
    train_classifier(_model(), (x, y), None, Normalization(
        (0.5,), (0.5,)), 2, TrainConfig(epochs=2, batch_size=16), None,
                     str(tmp_path / "c"))


def test_schedules():
  def lrs(**kw):
    sched = WarmupSchedule(OptimizerConfig(learning_rate=1.0, **kw), 10, 10)
    return [float(sched(s)) for s in (0, 9, 50, 99)]
  assert lrs() == [1.0, 1.0, 1.0, 1.0]
  cos = lrs(schedule="cosine")
  assert cos[0] == pytest.approx(1.0) and cos[-1] < 0.01 and cos[2] < 0.6
  assert lrs(schedule="step", step_epochs=5)[2:] == pytest.approx([0.1, 0.1])
  warm = lrs(warmup_epochs=1)
  assert warm[0] == pytest.approx(0.1) and warm[1] == pytest.approx(1.0)
  assert lrs(schedule="exponential")[-1] == pytest.approx(0.01, rel=0.1)


def test_optimizer_validation():
  for name in ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop",
               "adagrad"):
    assert build_optimizer(OptimizerConfig(name, 0.01))
  with pytest.raises(UserError, match="choose one of"):
    build_optimizer(OptimizerConfig("lbfgs"))
  with pytest.raises(UserError, match="learning rate"):
    build_optimizer(OptimizerConfig(learning_rate=-1))
  with pytest.raises(UserError, match="epochs"):
    TrainConfig(epochs=0).validate()



def test_resume_after_a_kill_ends_with_the_uninterrupted_weights(tmp_path):
  x, y = _blobs()
  norm = Normalization.from_images(x)
  # A schedule over all epochs, augmentation and label smoothing: the
  # resumed run must restore the optimizer step and replay the batches.
  config = TrainConfig(
      epochs=4, batch_size=16, label_smoothing=0.1, seed=3,
      optimizer=OptimizerConfig("momentum", 0.05, schedule="cosine"),
      augment=AugmentConfig(crop_padding_fraction=0.25, rotation_degrees=10))
  full = _model()
  reference = train_classifier(full, (x, y), None, norm, 2, config)
  ckpt = str(tmp_path / "ckpt")
  with pytest.raises(KeyboardInterrupt):
    train_classifier(_model(), (x, y), None, norm, 2, config, CtrlCAt(3),
                     ckpt)
  resumed = _model(seed=99)  # different init: the checkpoint must win
  result = train_classifier(resumed, (x, y), None, norm, 2, config, None,
                            ckpt, resume=True)
  assert [h["epoch"] for h in result.history] == [3, 4]
  assert result.epochs_run == 4
  for key in ("train_loss", "train_accuracy", "learning_rate"):
    assert result.history[-1][key] == reference.history[-1][key], key
  for a, b in zip(full.get_weights(), resumed.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_rows_and_tensorboard_use_the_shared_tags(tmp_path):
  x, y = _blobs()
  rec = RunRecorder(str(tmp_path), {})
  train_classifier(_model(), (x, y), (x[:50], y[:50]),
                   Normalization.from_images(x), 2,
                   TrainConfig(epochs=2, batch_size=32), rec)
  events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
  assert events
  tags = {value.tag for path in events
          for event in tf.compat.v1.train.summary_iterator(str(path))
          for value in event.summary.value}
  assert {"train_loss", "train_accuracy", "val_accuracy", "val_loss",
          "learning_rate"} <= set(rec.read_metrics()[-1])
  # The federated round loop's tags (fedclf.results.tensorboard_log).
  assert {"train/loss", "train/accuracy", "validation/accuracy",
          "validation/loss", "optimizer/learning_rate",
          "throughput/examples_per_second"} <= tags


def test_resume_after_the_best_epoch_ends_with_the_best_weights(tmp_path):
  # The validation set disagrees with the training labels, so validation
  # accuracy peaks early and the last epochs are not the best ones: the
  # resumed run must end with the best epoch's weights, which it only has
  # from the checkpoint.
  x, y = _blobs()
  val = (x[:60], 1 - y[:60])
  norm = Normalization.from_images(x)
  config = TrainConfig(epochs=4, batch_size=16, seed=2,
                       optimizer=OptimizerConfig("sgd", 0.5))
  full = _model()
  reference = train_classifier(full, (x, y), val, norm, 2, config)
  assert reference.best_epoch < 3  # the cut below comes after it
  ckpt = str(tmp_path / "ckpt")
  with pytest.raises(KeyboardInterrupt):
    train_classifier(_model(), (x, y), val, norm, 2, config, CtrlCAt(4),
                     ckpt)
  resumed = _model(seed=99)
  result = train_classifier(resumed, (x, y), val, norm, 2, config, None,
                            ckpt, resume=True)
  assert result.best_epoch == reference.best_epoch
  for a, b in zip(full.get_weights(), resumed.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_resumed_run_logs_each_epoch_row_once(tmp_path):
  x, y = _blobs()
  norm = Normalization.from_images(x)
  val = (x[:50], y[:50])
  config = TrainConfig(epochs=5, batch_size=16, seed=3, checkpoint_every=2)
  full = RunRecorder(str(tmp_path / "full"), {})
  train_classifier(_model(), (x, y), val, norm, 2, config, full,
                   str(tmp_path / "full" / "ckpt"))
  cut = tmp_path / "cut"
  # Killed after epoch 4's row, before its checkpoint: rows 3 and 4 are
  # logged past the epoch-2 checkpoint, and the resumed run replays them.
  with pytest.raises(KeyboardInterrupt):
    train_classifier(_model(), (x, y), val, norm, 2, config,
                     CtrlCAfterRow(cut, 4), str(cut / "ckpt"))
  resumed = RunRecorder(str(cut), {}, resume=True)
  train_classifier(_model(seed=99), (x, y), val, norm, 2, config, resumed,
                   str(cut / "ckpt"), resume=True)
  assert [r["epoch"] for r in resumed.read_metrics()] == [1, 2, 3, 4, 5]
  assert rows_without_clock(resumed) == rows_without_clock(full)


def _train_then_probe(recorder, out_dir, resume):
  """A checkpointed stage, then one without checkpoints (a linear probe's
  way), sharing `recorder`."""
  x, y = _blobs()
  norm = Normalization.from_images(x)
  train_classifier(_model(), (x, y), None, norm, 2,
                   TrainConfig(epochs=2, batch_size=16, seed=3), recorder,
                   str(out_dir / "ckpt"), resume)
  train_classifier(_model(seed=1), (x, y), None, norm, 2,
                   TrainConfig(epochs=3, batch_size=16, seed=4,
                               checkpoint_every=0), recorder,
                   log_prefix="probe_")


def test_a_stage_without_checkpoints_relogs_its_rows_once(tmp_path):
  full = RunRecorder(str(tmp_path / "full"), {})
  _train_then_probe(full, tmp_path / "full", False)
  cut = tmp_path / "cut"
  with pytest.raises(KeyboardInterrupt):
    _train_then_probe(CtrlCAfterRow(cut, 2, "probe_"), cut, False)
  resumed = RunRecorder(str(cut), {}, resume=True)
  # The first stage is done (nothing replayed); the probe starts over.
  _train_then_probe(resumed, cut, True)
  assert [(r["epoch"], "probe_train_loss" in r)
          for r in resumed.read_metrics()] == [
              (1, False), (2, False), (1, True), (2, True), (3, True)]
  assert rows_without_clock(resumed) == rows_without_clock(full)
