"""Results and checkpoints are written to a temporary file and renamed, so
a kill during a write leaves the previous version intact and readable."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fedclf.errors import UserError
from fedclf.federated.rounds import Checkpointer
from fedclf.federated.rounds import ServerState
from fedclf.results import RunRecorder
from fedclf.results.record import atomic_output

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Rewrites summary.json, then SIGKILLs itself halfway through writing the
# next version (after a flush, so the cut bytes really reach the file).
_KILLED_MID_WRITE = textwrap.dedent("""
    import os, signal, sys
    from fedclf.results.record import atomic_output, atomic_write_json
    path = sys.argv[1]
    atomic_write_json(path, {"round": 1})
    with atomic_output(path) as tmp:
      with open(tmp, "w") as f:
        f.write('{"round": 2, "accur')
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)


def test_sigkill_during_a_write_keeps_the_previous_file(tmp_path):
  path = tmp_path / "summary.json"
  proc = subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, str(path)],
                        cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert proc.returncode == -signal.SIGKILL, proc.stderr
  assert json.loads(path.read_text()) == {"round": 1}


def test_error_during_a_write_keeps_the_previous_file_and_no_temp(tmp_path):
  path = tmp_path / "accuracy.png"
  path.write_bytes(b"old")
  with pytest.raises(KeyboardInterrupt):
    with atomic_output(str(path)) as tmp:
      assert tmp.endswith(".png")  # writers pick the format from it
      with open(tmp, "wb") as f:
        f.write(b"half a new pl")
      raise KeyboardInterrupt
  assert path.read_bytes() == b"old"
  assert [p.name for p in tmp_path.iterdir()] == ["accuracy.png"]


def state(round_num, value):
  return ServerState(trainable=[np.full((3,), value, np.float32)],
                     non_trainable=[], optimizer=[], extra=[],
                     round_num=round_num)


def test_checkpoint_cut_by_an_interrupt_leaves_the_last_good_one(
    tmp_path, monkeypatch):
  checkpoints = Checkpointer(str(tmp_path))
  good = checkpoints.save(state(1, 1.0), {}, "tag")

  def cut_savez(file, **arrays):
    with open(file, "wb") as f:
      f.write(b"PK\x03\x04 half a zip")
    raise KeyboardInterrupt

  monkeypatch.setattr(np, "savez", cut_savez)
  with pytest.raises(KeyboardInterrupt):
    checkpoints.save(state(2, 2.0), {}, "tag")
  assert checkpoints.latest() == good
  assert os.listdir(tmp_path) == ["round_00001.npz"]
  restored, _ = checkpoints.restore(good, state(0, 0.0), "tag")
  assert restored.round_num == 1 and restored.trainable[0][0] == 1.0


def test_checkpoints_from_before_the_objective_tag_still_resume(tmp_path):
  checkpoints = Checkpointer(str(tmp_path))
  old = checkpoints.save(state(3, 3.0), {}, "fedavg/cnn/mnist/local/100")
  restored, _ = checkpoints.restore(
      old, state(0, 0.0), "fedavg/cnn/mnist/local/100/supervised")
  assert restored.round_num == 3
  with pytest.raises(UserError, match="different setup"):
    checkpoints.restore(old, state(0, 0.0),
                        "fedavg/cnn/mnist/local/100/simclr")


def test_resume_after_a_cut_metrics_line_appends_cleanly(tmp_path):
  recorder = RunRecorder(str(tmp_path), {})
  for step in (1, 2, 3):
    recorder.log_metrics(step, {"loss": 1.0 / step}, "round")
  with open(recorder.metrics_path, "a") as f:
    f.write('{"round": 4, "lo')  # a kill during the append
  resumed = RunRecorder(str(tmp_path), {}, resume=True)
  resumed.drop_metrics_after(2, "round")  # the checkpoint was round 2
  resumed.log_metrics(3, {"loss": 0.3}, "round")
  resumed.write_summary({"rounds_run": 3})
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["round"] for line in lines] == [1, 2, 3]
  assert json.loads((tmp_path / "summary.json").read_text())[
      "rounds_run"] == 3
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]



def test_curves_read_a_metrics_file_with_a_cut_last_line(tmp_path):
  # Rows are appended, not replaced: a kill mid-append cuts the last line,
  # and tables and plots of that run must still read the rows before it.
  from fedclf.results import curves  # pylint: disable=g-import-not-at-top
  recorder = RunRecorder(str(tmp_path), {})
  for step in (1, 2):
    recorder.log_metrics(step, {"test_accuracy": 0.1 * step}, "round")
  with open(recorder.metrics_path, "a") as f:
    f.write('{"round": 3, "test_acc')
  assert curves.read_curve(str(tmp_path)) == ([1, 2], [0.1, 0.2])
