"""A run folder is never destroyed or silently reused: a used folder is
refused without --resume/--overwrite, --overwrite moves it aside byte for
byte, --resume checks the setting, a lock keeps a second process out, and
a bad --out_dir fails before any data is loaded."""

import json
import os
import socket
import subprocess
import sys

from absl import logging
import pytest

from benchmarks.fault_runs import file_md5s
from fedclf.errors import UserError
from fedclf.results import run_folder
from fedclf.results import RunRecorder
from tests.binary_batch import assert_one_error_line
from tests.binary_batch import run_commands

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SETTING = {"dataset": "digits", "model": "mlp", "lr": 0.1, "seed": 0,
           "augment": ["flip"], "rounds": 5, "out_dir": "x", "resume": False}


def fake_run(folder, setting=None):
  """A finished run as a binary leaves it (with or without setting.json)."""
  os.makedirs(os.path.join(folder, "checkpoints"))
  with open(os.path.join(folder, "checkpoints", "epoch_1.npz"), "wb") as f:
    f.write(os.urandom(64))
  for name, text in (("metrics.jsonl", '{"epoch": 1}\n'),
                     ("summary.json", '{"test_accuracy": 0.5}')):
    with open(os.path.join(folder, name), "w") as f:
      f.write(text)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump({"config": {"flags": dict(setting or SETTING)}}, f)


def claim(folder, setting=None, resume=False, overwrite=False):
  return run_folder.claim_run_folder(str(folder), dict(setting or SETTING),
                                     resume=resume, overwrite=overwrite)


def one_line(error):
  text = str(error.value)
  assert "\n" not in text, text
  return text


def test_fresh_claim_locks_records_setting_and_cleans_up_if_unused(tmp_path):
  out = tmp_path / "a" / "run"
  with claim(out) as lock:
    assert (out / run_folder.LOCK_FILE).exists()
    stored = json.loads((out / "setting.json").read_text())
    assert stored["setting"] == run_folder.run_setting(SETTING)
    assert stored["sha256"] == run_folder.setting_hash(stored["setting"])
    assert "rounds" not in stored["setting"] and "lr" in stored["setting"]
    assert lock.moved_aside_to is None
  # Nothing was written: the folder is gone again (a failed first try of
  # a command leaves no run behind that a retry would be refused for).
  assert not out.exists()


def test_claim_of_a_run_folder_that_is_used_keeps_setting_and_run(tmp_path):
  out = tmp_path / "run"
  with claim(out):
    RunRecorder(str(out), {"flags": SETTING}).log_metrics(1, {"x": 1})
  # (A source.patch too when the tests run from a checkout with changes.)
  assert sorted(set(os.listdir(out)) - {"source.patch"}) == [
      "config.json", "metrics.jsonl", "setting.json"]


def test_used_folder_is_refused_naming_resume_and_overwrite(tmp_path):
  out = tmp_path / "run"
  fake_run(out)
  before = file_md5s(out)
  with pytest.raises(UserError) as error:
    claim(out)
  text = one_line(error)
  assert "--resume" in text and "--overwrite" in text and str(out) in text
  assert file_md5s(out) == before


def test_nested_run_counts_as_a_used_folder(tmp_path):
  fake_run(tmp_path / "run" / "seed_0")
  with pytest.raises(UserError, match=r"seed_0.config\.json"):
    claim(tmp_path / "run")


def test_overwrite_moves_the_old_run_aside_byte_for_byte(tmp_path):
  out = tmp_path / "run"
  fake_run(out)
  before = file_md5s(out)
  with claim(out, overwrite=True) as lock:
    aside = lock.moved_aside_to
    assert aside and os.path.basename(aside).startswith("run.old-")
    assert sorted(os.listdir(out)) == [run_folder.LOCK_FILE, "setting.json"]
  assert file_md5s(aside) == before
  # Twice in one second: a second name, nothing replaced.
  fake_run(out)
  with claim(out, overwrite=True) as lock:
    assert lock.moved_aside_to != aside
  assert file_md5s(aside) == before


def test_resume_with_another_setting_names_the_flags(tmp_path):
  out = tmp_path / "run"
  with claim(out):
    fake_run_files = RunRecorder(str(out), {"flags": SETTING})
    fake_run_files.log_metrics(1, {"x": 1})
  other = dict(SETTING, seed=1, lr=0.2)
  with pytest.raises(UserError) as error:
    claim(out, other, resume=True)
  text = one_line(error)
  assert "--lr=0.1 (now 0.2)" in text and "--seed=0 (now 1)" in text
  assert "--overwrite" in text and "dataset" not in text


def test_resume_allows_more_rounds_and_other_paths(tmp_path):
  out = tmp_path / "run"
  with claim(out):
    RunRecorder(str(out), {"flags": SETTING}).log_metrics(1, {"x": 1})
  before = (out / "setting.json").read_bytes()
  longer = dict(SETTING, rounds=50, out_dir="elsewhere", resume=True,
                checkpoint_every=3)
  with claim(out, longer, resume=True):
    pass
  assert (out / "setting.json").read_bytes() == before
  assert (out / "metrics.jsonl").exists()


def test_resume_of_a_run_without_setting_json_compares_its_config(tmp_path):
  out = tmp_path / "run"
  fake_run(out)  # a run written before setting.json existed
  with pytest.raises(UserError, match=r"--seed=0 \(now 3\)"):
    claim(out, dict(SETTING, seed=3), resume=True)
  with claim(out, dict(SETTING, epochs=9), resume=True):
    pass
  assert json.loads((out / "setting.json").read_text())["setting"][
      "seed"] == 0


def test_resume_of_an_empty_folder_starts_it(tmp_path):
  with claim(tmp_path / "run", resume=True):
    assert (tmp_path / "run" / "setting.json").exists()


def test_resume_and_overwrite_together_are_assert_one_error_line(tmp_path):
  with pytest.raises(UserError, match="one of them"):
    claim(tmp_path / "run", resume=True, overwrite=True)


def test_second_claim_while_locked_names_the_holder(tmp_path):
  out = tmp_path / "run"
  with claim(out):
    with pytest.raises(UserError) as error:
      claim(out, resume=True)
    text = one_line(error)
    assert f"pid {os.getpid()}" in text and socket.gethostname() in text
    # --overwrite does not move a folder in use aside either.
    with pytest.raises(UserError, match="in use"):
      claim(out, overwrite=True)
  assert not (out / run_folder.LOCK_FILE).exists()


def write_lock(folder, **holder):
  os.makedirs(folder, exist_ok=True)
  record = {"pid": os.getpid(), "host": socket.gethostname(),
            "pid_start": run_folder._process_start(os.getpid()),
            "started_utc": "2026-01-01T00:00:00+00:00", **holder}
  (folder / run_folder.LOCK_FILE).write_text(json.dumps(record))


def dead_pid():
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


@pytest.mark.parametrize("holder", [
    {"pid": None},  # replaced by a pid that has exited (kill -9)
    {"pid_start": "1"},  # a live pid, but another process than the holder
])
def test_stale_lock_is_taken_over_with_a_warning(tmp_path, holder,
                                                 monkeypatch):
  out = tmp_path / "run"
  write_lock(out, **{k: v if v is not None else dead_pid()
                     for k, v in holder.items()})
  warnings = []
  monkeypatch.setattr(logging, "warning",
                      lambda msg, *args: warnings.append(msg % args))
  with claim(out):
    record = json.loads((out / run_folder.LOCK_FILE).read_text())
    assert record["pid"] == os.getpid()
  assert len(warnings) == 1 and "taking over the stale lock" in warnings[0]
  assert not list(out.glob(".fedclf.lock*"))


def test_lock_of_another_host_is_assert_one_error_line(tmp_path):
  write_lock(tmp_path / "run", host="elsewhere", pid=dead_pid())
  with pytest.raises(UserError, match="on elsewhere"):
    claim(tmp_path / "run")


def test_unwritable_out_dir_is_one_line(tmp_path):
  (tmp_path / "file.txt").write_text("x")
  with pytest.raises(UserError) as error:
    claim(tmp_path / "file.txt" / "run")
  assert "cannot create --out_dir" in one_line(error)
  with pytest.raises(UserError, match="a file is in the way"):
    claim(tmp_path / "file.txt")
  assert (tmp_path / "file.txt").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0,
                    reason="root writes through permission bits")
def test_read_only_out_dir_is_one_line(tmp_path):
  (tmp_path / "ro").mkdir(mode=0o500)
  with pytest.raises(UserError, match="cannot write in --out_dir"):
    claim(tmp_path / "ro")


def test_recorder_never_drops_an_existing_runs_metrics(tmp_path):
  fake_run(tmp_path)
  before = file_md5s(tmp_path)
  with pytest.raises(UserError, match="already holds a run"):
    RunRecorder(str(tmp_path), {})
  assert file_md5s(tmp_path) == before


# -- the binaries -----------------------------------------------------------
# One process per binary answers its command lines (tests/binary_batch.py).

CENTRAL = ["baselines.centralized", "--dataset=digits", "--model=mlp",
           "--epochs=1", "--batch_size=64", "--val_fraction=0"]


def test_binary_guards_its_run_folder(tmp_path):
  module, *args = CENTRAL
  out, locked = tmp_path / "run", tmp_path / "locked"
  (first,) = run_commands(module, [[*args, f"--out_dir={out}"]])
  assert first.returncode == 0, first.stderr[-2000:]
  assert (out / "setting.json").exists()
  assert not (out / run_folder.LOCK_FILE).exists()
  finished = file_md5s(out)
  write_lock(locked)  # held by this (live) test process
  (tmp_path / "file.txt").write_text("x")
  (rerun, other_seed, overwrite, resumed, in_use, bad_dir) = run_commands(
      module, [
          [*args, f"--out_dir={out}"],
          [*args, f"--out_dir={out}", "--resume", "--seed=1"],
          [*args, f"--out_dir={out}", "--overwrite"],
          [*args, f"--out_dir={out}", "--resume"],
          [*args, f"--out_dir={locked}"],
          # The data would fail too (missing offline): the out_dir comes
          # first.
          [*args, "--dataset=usps", f"--data_dir={tmp_path}", "--nodownload",
           f"--out_dir={tmp_path / 'file.txt' / 'run'}"]])
  line = assert_one_error_line(rerun)
  assert "--resume" in line and "--overwrite" in line
  assert "--seed=0 (now 1)" in assert_one_error_line(other_seed)
  # Both refusals left the run as it was, and --overwrite moved it aside
  # byte for byte.
  assert overwrite.returncode == 0, overwrite.stderr[-2000:]
  aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
  assert len(aside) == 1 and file_md5s(aside[0]) == finished
  assert (out / "summary.json").exists()
  assert not (out / run_folder.LOCK_FILE).exists()
  # Resuming a finished run trains nothing more and keeps its results.
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["epochs_run"] == 1 and summary["examples_per_second"] > 0
  assert f"in use by pid {os.getpid()}" in assert_one_error_line(in_use)
  line = assert_one_error_line(bad_dir)
  assert "cannot create --out_dir" in line and "usps" not in line


def test_federated_rerun_is_refused(tmp_path):
  out = tmp_path / "run"
  args = ["--dataset=digits", "--model=mlp", "--rounds=1", "--num_clients=4",
          "--clients_per_round=2", "--per_client_eval=0", f"--out_dir={out}"]
  first, rerun = run_commands("simulations.federated", [args, args])
  assert first.returncode == 0, first.stderr[-2000:]
  assert "already holds a run" in assert_one_error_line(rerun)
  # The claim is every binary's (fedclf.cli.run): that nothing is touched
  # is checked byte for byte on the centralized binary above.
  assert json.loads((out / "summary.json").read_text())["rounds_run"] == 1
