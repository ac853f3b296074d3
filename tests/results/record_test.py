"""Run records: config, metrics lines, atomic summary, resume."""

import json
import math

import numpy as np
import pytest

from fedclf.errors import UserError
from fedclf.results import atomic_write_json
from fedclf.results import RunRecorder


def test_run_files(tmp_path):
  rec = RunRecorder(str(tmp_path), {"lr": 0.1, "shape": (28, 28, 1)})
  rec.log_metrics(1, {"accuracy": np.float32(0.5), "loss": math.nan})
  rec.log_metrics(2, {"accuracy": 0.75}, step_name="round")
  rec.write_summary({"test_accuracy": 0.9})
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["config"] == {"lr": 0.1, "shape": [28, 28, 1]}
  assert config["versions"]["tensorflow"].startswith("2.14")
  assert "commit" in config["git"] and config["command"]
  rows = rec.read_metrics()
  assert rows[0]["step"] == 1 and rows[0]["accuracy"] == 0.5
  assert rows[0]["loss"] == "nan"
  assert rows[1]["round"] == 2 and rows[1]["wall_seconds"] >= 0
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["test_accuracy"] == 0.9 and "wall_seconds" in summary


def test_resume_keeps_metrics_and_original_config(tmp_path):
  rec = RunRecorder(str(tmp_path), {"a": 1})
  rec.log_metrics(1, {"x": 1})
  with open(rec.metrics_path, "a") as f:
    f.write('{"step": 2, "x"')  # a line cut by a kill
  resumed = RunRecorder(str(tmp_path), {"a": 2}, resume=True)
  assert [r["step"] for r in resumed.read_metrics()] == [1]
  assert json.loads((tmp_path / "config.json").read_text())["config"] == {
      "a": 1}
  assert list(tmp_path.glob("config.resume-*.json"))
  # Without resume an existing run's metrics are never dropped.
  with pytest.raises(UserError, match="already holds a run"):
    RunRecorder(str(tmp_path), {"a": 3})
  assert [r["step"] for r in resumed.read_metrics()] == [1]


def test_atomic_write_leaves_no_temp_files(tmp_path):
  atomic_write_json(str(tmp_path / "x.json"), {"a": [1, 2]})
  assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_drop_metrics_removes_the_chosen_rows_and_keeps_the_order(tmp_path):
  rec = RunRecorder(str(tmp_path), {})
  for step, stage in ((1, "a"), (1, "b"), (2, "a"), (2, "b"), (3, "a")):
    rec.log_metrics(step, {stage: float(step)}, "epoch")
  assert rec.drop_metrics(lambda row: "a" in row and row["epoch"] > 1) == 2
  assert [(r["epoch"], "a" in r) for r in rec.read_metrics()] == [
      (1, True), (1, False), (2, False)]
  assert rec.drop_metrics(lambda row: False) == 0
  assert len(rec.read_metrics()) == 3
  assert not list(tmp_path.glob(".tmp-*"))


def test_resume_replaying_a_row_moves_it_to_the_end_not_twice(tmp_path):
  # Killed after its final checkpoint (epoch 2) and its test row; another
  # run, killed after epoch 1's checkpoint, had logged epoch 2 as well.
  first = RunRecorder(str(tmp_path), {})
  for epoch in (1, 2):
    first.log_metrics(epoch, {"loss": 1.0 / epoch, "epoch_seconds": 0.1},
                      "epoch")
  first.log_metrics(2, {"test_accuracy": 0.5}, "epoch")
  resumed = RunRecorder(str(tmp_path), {}, resume=True)
  resumed.drop_metrics(lambda row: "epoch_seconds" in row and
                       row["epoch"] > 1)  # the stage's own replay
  resumed.log_metrics(2, {"loss": 0.5, "epoch_seconds": 0.1}, "epoch")
  resumed.log_metrics(2, {"test_accuracy": 0.5}, "epoch")
  resumed.log_metrics(2, {"test_accuracy": 0.5}, "epoch")  # a new row
  rows = [{k: v for k, v in r.items() if k != "wall_seconds"}
          for r in resumed.read_metrics()]
  assert rows == [
      {"epoch": 1, "loss": 1.0, "epoch_seconds": 0.1},
      {"epoch": 2, "loss": 0.5, "epoch_seconds": 0.1},
      {"epoch": 2, "test_accuracy": 0.5},
      {"epoch": 2, "test_accuracy": 0.5}]
