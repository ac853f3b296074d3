"""Checkpoints know their run's setting and survive corruption: a resumed
run refuses a checkpoint of another setting (naming the flags), and skips
an unreadable newest checkpoint for the previous one (with a warning),
ending exactly where the uninterrupted run ends (for a whole federated
simulation: tests/federated/simulation_test.py, resumed run)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.federated.rounds import Checkpointer
from fedclf.federated.rounds import ServerState
from fedclf.results import RunRecorder
from fedclf.results.run_folder import run_setting
from fedclf.train import train_classifier
from fedclf.train import TrainConfig
from fedclf.train.epoch_driver import EpochDriver
from fedclf.train.epoch_driver import EpochDriverConfig

SETTING = {"lr": 0.1, "model": "mlp"}


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _garble(path):
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.seek(size // 3)
    f.write(b"\xff" * max(1, size // 3))


def _rows(out_dir, step):
  with open(os.path.join(out_dir, "metrics.jsonl")) as f:
    return [json.loads(line)[step] for line in f]


# -- federated rounds (round_NNNNN.npz) ----------------------------------------

def _state(round_num, value):
  return ServerState(trainable=[np.full((3,), value, np.float32)],
                     non_trainable=[], optimizer=[], extra=[],
                     round_num=round_num)


@pytest.mark.parametrize("damage", [_truncate, _garble, os.remove])
def test_unreadable_newest_round_checkpoint_falls_back(tmp_path, caplog,
                                                       damage):
  checkpoints = Checkpointer(str(tmp_path), setting=SETTING)
  checkpoints.save(_state(1, 1.0), {0: [np.ones(2)]}, "tag")
  newest = checkpoints.save(_state(2, 2.0), {0: [np.ones(2) * 2]}, "tag")
  if damage is os.remove:
    damage = lambda path: open(path, "wb").close()  # an empty file
  damage(newest)
  with caplog.at_level("WARNING"):
    path, state, clients = checkpoints.restore_latest(_state(0, 0.0), "tag")
  assert path.endswith("round_00001.npz")
  assert state.round_num == 1 and state.trainable[0][0] == 1.0
  assert clients[0][0][0] == 1.0
  assert "round_00002.npz" in caplog.text and "previous" in caplog.text


def test_no_readable_round_checkpoint_is_a_one_line_error(tmp_path):
  checkpoints = Checkpointer(str(tmp_path))
  for r in (1, 2):
    _truncate(checkpoints.save(_state(r, r), {}, "tag"))
  with pytest.raises(UserError, match="no checkpoint in .* can be read") as e:
    checkpoints.restore_latest(_state(0, 0.0), "tag")
  assert "\n" not in str(e.value)
  assert Checkpointer(str(tmp_path / "none")).restore_latest(
      _state(0, 0.0), "tag") is None


def test_round_checkpoint_of_another_setting_is_refused(tmp_path):
  Checkpointer(str(tmp_path), setting=SETTING).save(_state(1, 1.0), {}, "tag")
  other = Checkpointer(str(tmp_path), setting={**SETTING, "lr": 0.2})
  with pytest.raises(UserError, match=r"another setting: --lr=0.1 \(now 0.2\)"):
    other.restore_latest(_state(0, 0.0), "tag")
  # Flags only one side has (another fedclf version), or no setting on one
  # side (older checkpoints, library callers), are not compared.
  for setting in ({**SETTING, "new_flag": 1}, None):
    restored = Checkpointer(str(tmp_path), setting=setting).restore_latest(
        _state(0, 0.0), "tag")
    assert restored[1].round_num == 1


# -- epoch loops (TensorFlow checkpoints) ---------------------------------------

class _Counter:
  """A stand-in epoch: one variable moved by an amount drawn from the
  epoch's seed, so a resumed run is checkable against a full one."""

  def __init__(self):
    self.weight = tf.Variable(0.0, dtype=tf.float64)

  def run_epoch(self, epoch, seed):
    self.weight.assign_add(np.random.default_rng(seed).random())
    return {"loss": 1.0 / epoch}


def _drive(tmp_path, epochs, resume=False, setting=None, out="run"):
  counter = _Counter()
  recorder = RunRecorder(str(tmp_path / out), {}, resume=resume)
  EpochDriver(EpochDriverConfig(
      epochs=epochs, seed=3, checkpoint_dir=str(tmp_path / out / "c"),
      resume=resume, setting=setting or SETTING),
      {"weight": counter.weight}).run(counter.run_epoch, recorder=recorder)
  return float(counter.weight.numpy())


def _ckpt_file(tmp_path, epoch, suffix):
  return str(tmp_path / "run" / "c" / f"ckpt-{epoch}{suffix}")


@pytest.mark.parametrize("damage", [
    lambda t: _truncate(_ckpt_file(t, 3, ".data-00000-of-00001")),
    lambda t: _garble(_ckpt_file(t, 3, ".data-00000-of-00001")),
    lambda t: _garble(_ckpt_file(t, 3, ".index")),
    lambda t: os.remove(_ckpt_file(t, 3, ".data-00000-of-00001")),
], ids=["truncated", "garbled", "garbled_index", "missing_shard"])
def test_unreadable_newest_epoch_checkpoint_falls_back(tmp_path, caplog,
                                                       damage):
  full = _drive(tmp_path, 4, out="full")
  _drive(tmp_path, 3)
  damage(tmp_path)
  with caplog.at_level("WARNING"):
    resumed = _drive(tmp_path, 4, resume=True)
  assert "ckpt-3" in caplog.text and "cannot read checkpoint" in caplog.text
  assert resumed == full
  assert _rows(tmp_path / "run", "epoch") == [1, 2, 3, 4]


def test_epoch_checkpoints_without_their_state_file_still_resume(tmp_path):
  full = _drive(tmp_path, 4, out="full")
  _drive(tmp_path, 3)
  os.remove(tmp_path / "run" / "c" / "checkpoint")
  assert _drive(tmp_path, 4, resume=True) == full
  assert _rows(tmp_path / "run", "epoch") == [1, 2, 3, 4]


def test_no_readable_epoch_checkpoint_is_a_one_line_error(tmp_path):
  _drive(tmp_path, 2)
  for epoch in (1, 2):
    _truncate(_ckpt_file(tmp_path, epoch, ".index"))
  with pytest.raises(UserError, match="no checkpoint in .* can be read") as e:
    _drive(tmp_path, 3, resume=True)
  assert "\n" not in str(e.value)


def test_epoch_checkpoint_of_another_setting_is_refused(tmp_path):
  _drive(tmp_path, 2)
  with pytest.raises(UserError,
                     match=r"ckpt-2 was written by a run with another "
                           r"setting: --lr=0.1 \(now 0.3\)"):
    _drive(tmp_path, 3, resume=True, setting={**SETTING, "lr": 0.3})
  # The saves after a resume carry the resumed run's setting.
  _drive(tmp_path, 3, resume=True, setting={**SETTING, "new_flag": True})
  with pytest.raises(UserError, match="--new_flag=true"):
    _drive(tmp_path, 4, resume=True,
           setting={**SETTING, "new_flag": False})


def test_classifier_resumes_past_a_corrupt_checkpoint(tmp_path):
  # Optimizer slots are built after the restore and restored lazily: the
  # corruption must be found before, not at the first training step.
  rng = np.random.default_rng(0)
  y = np.arange(120) % 2
  x = np.clip(rng.normal(0, 0.3, (120, 4, 4, 1)) + y[:, None, None, None],
              0, 1).astype(np.float32)
  norm = Normalization.from_images(x)
  setting = run_setting({"lr": 0.1, "out_dir": "ignored"})

  def train(epochs, ckpt=None, resume=False, seed=0):
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([tf.keras.layers.Flatten(input_shape=(4, 4, 1)),
                                 tf.keras.layers.Dense(2)])
    train_classifier(model, (x, y), None, norm, 2,
                     TrainConfig(epochs=epochs, batch_size=16, seed=1), None,
                     ckpt, resume, setting=setting)
    return model.get_weights()

  full = train(4)
  ckpt = str(tmp_path / "ckpt")
  train(3, ckpt)
  _garble(os.path.join(ckpt, "ckpt-3.data-00000-of-00001"))
  resumed = train(4, ckpt, resume=True, seed=99)
  for a, b in zip(full, resumed):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
