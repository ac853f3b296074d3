"""SSL pretraining killed mid-run and resumed ends with exactly the weights
and rows of the uninterrupted run, and writes rows and TensorBoard
scalars."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from fedclf.data import DataConfig
from fedclf.data import load_dataset
from fedclf.models import build_model_parts
from fedclf.models import ModelConfig
from fedclf.results import RunRecorder
from fedclf.ssl import build_method
from fedclf.ssl import ByolParams
from fedclf.ssl import PretrainConfig
from fedclf.ssl import pretrain_encoder
from fedclf.ssl import SslConfig
from fedclf.train import OptimizerConfig
from tests.ctrl_c import CtrlCAfterRow
from tests.ctrl_c import CtrlCAt
from tests.ctrl_c import rows_without_clock

SMALL = SslConfig(method="byol", projection_dim=16, hidden_dim=32,
                  params=ByolParams(predictor_hidden_dim=8))
# Cosine decay over all epochs: the resumed run must restore the step.
CONFIG = PretrainConfig(epochs=3, batch_size=64,
                        optimizer=OptimizerConfig("adam", 1e-3,
                                                  schedule="cosine"),
                        seed=4)


@pytest.fixture(scope="module")
def digits():
  return load_dataset(DataConfig("digits", train_limit=200))


def _parts():
  encoder = build_model_parts("mlp", (8, 8, 1), 10,
                              ModelConfig(width_multiplier=0.125)).encoder
  # BYOL: its target network (in the method's checkpoint) moves by EMA.
  method = build_method(SMALL, encoder.output_shape[-1])
  return encoder, method


# LARS keeps a velocity per variable: the checkpoint must restore it too.
LARS = OptimizerConfig("lars", 0.3, weight_decay=1e-6, schedule="cosine",
                       warmup_epochs=1.0)


@pytest.mark.parametrize("optimizer", [CONFIG.optimizer, LARS],
                         ids=["adam", "lars"])
def test_resume_after_a_kill_ends_with_the_uninterrupted_weights(
    digits, tmp_path, optimizer):
  config = dataclasses.replace(CONFIG, optimizer=optimizer)
  full_encoder, full_method = _parts()
  full = pretrain_encoder(full_encoder, full_method, digits.x_train, config)
  ckpt = str(tmp_path / "ckpt")
  with pytest.raises(KeyboardInterrupt):
    pretrain_encoder(*_parts(), digits.x_train, config, CtrlCAt(2), ckpt)
  encoder, method = _parts()
  rest = pretrain_encoder(encoder, method, digits.x_train, config,
                          checkpoint_dir=ckpt, resume=True)
  assert [r["epoch"] for r in rest.history] == [2, 3]
  assert rest.epochs_run == 3
  for key in ("loss", "learning_rate", "representation_std"):
    assert rest.history[-1][key] == full.history[-1][key], key
  for a, b in zip(full_encoder.get_weights() + full_method.heads.get_weights(),
                  encoder.get_weights() + method.heads.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_resumed_run_logs_each_epoch_row_once(digits, tmp_path):
  config = dataclasses.replace(CONFIG, checkpoint_every=2)
  full = RunRecorder(str(tmp_path / "full"), {})
  pretrain_encoder(*_parts(), digits.x_train, config, full)
  cut = tmp_path / "cut"
  # Killed after epoch 3's row, before its checkpoint (the last is saved
  # whatever checkpoint_every says): the last checkpoint is epoch 2's.
  with pytest.raises(KeyboardInterrupt):
    pretrain_encoder(*_parts(), digits.x_train, config,
                     CtrlCAfterRow(cut, 3, "ssl_"), str(cut / "ckpt"))
  resumed = RunRecorder(str(cut), {}, resume=True)
  pretrain_encoder(*_parts(), digits.x_train, config, resumed,
                   str(cut / "ckpt"), resume=True)
  assert [r["epoch"] for r in resumed.read_metrics()] == [1, 2, 3]
  assert rows_without_clock(resumed) == rows_without_clock(full)


def test_rows_and_tensorboard(digits, tmp_path):
  recorder = RunRecorder(str(tmp_path), {})
  pretrain_encoder(*_parts(), digits.x_train,
                   PretrainConfig(epochs=1, batch_size=64, seed=1), recorder)
  row = recorder.read_metrics()[-1]
  assert row["epoch"] == 1
  assert {"ssl_loss", "ssl_learning_rate", "ssl_representation_std",
          "ssl_epoch_seconds"} <= set(row)
  tags = {value.tag
          for path in (tmp_path / "tb").glob("events.out.tfevents.*")
          for event in tf.compat.v1.train.summary_iterator(str(path))
          for value in event.summary.value}
  assert {"ssl/train/loss", "ssl/optimizer/learning_rate",
          "ssl/diagnostics/representation_std"} <= tags
