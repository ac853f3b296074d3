"""A full disk ends a binary with one line and exit 2, nothing lost.

Disk-full errors are recognised whichever writer met them (Python's
OSError ENOSPC/EDQUOT, TensorFlow's checkpoint save), the message names the
file and the checkpoint --resume continues from, and the writes that failed
leave the previous files whole and no temporary file behind. The real
writes run on a tiny tmpfs (root only: skipped otherwise); the whole
binary on a full disk is benchmarks/fault_injection.py's full_disk fault.
"""

import errno
import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from benchmarks.fault_runs import fill_filesystem
from fedclf import cli
from fedclf import process_exit
from fedclf.errors import disk_full_path
from fedclf.errors import is_disk_full
from fedclf.results import run_folder
from fedclf.results.record import atomic_output
from fedclf.results.record import atomic_write_json

_TF_MESSAGE = (
    "{{function_node __wrapped__SaveV2_dtypes_25_device_/job:localhost/"
    "replica:0/task:0/device:CPU:0}} /runs/a/checkpoints/ckpt-7_temp/"
    "part-00000-of-00001.data-00000-of-00001.tempstate123; No space left on "
    "device [Op:SaveV2]")


def _raised(error, during=None):
  """`error` as raised (with `during` as its context when given)."""
  try:
    if during is None:
      raise error
    try:
      raise during
    except BaseException:  # pylint: disable=broad-except
      raise error  # pylint: disable=raise-missing-from
  except BaseException as e:  # pylint: disable=broad-except
    return e


@pytest.mark.parametrize("error, path", [
    (OSError(errno.ENOSPC, "No space left on device", "/r/summary.json"),
     "/r/summary.json"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), None),
    (tf.errors.ResourceExhaustedError(None, None, _TF_MESSAGE),
     "/runs/a/checkpoints/ckpt-7"),
    (tf.errors.UnknownError(None, None, "/t/events.out; No space left on "
                            "device"), "/t/events.out"),
    # The writer's close in a `finally` failing after the first error.
    (_raised(ValueError("flush failed"),
             during=OSError(errno.ENOSPC, "No space", "/r/m.jsonl")),
     "/r/m.jsonl"),
])
def test_disk_full_errors_are_recognised_with_their_file(error, path):
  assert is_disk_full(error)
  assert disk_full_path(error) == path


@pytest.mark.parametrize("error", [
    OSError(errno.EACCES, "Permission denied", "/r"),
    tf.errors.ResourceExhaustedError(None, None, "OOM when allocating"),
    ValueError("No space left on device"),  # not from a writer
    KeyboardInterrupt(),
])
def test_other_errors_are_not_disk_full(error):
  assert not is_disk_full(error)


def test_message_is_one_line_naming_the_newest_checkpoint(tmp_path):
  checkpoints = tmp_path / "checkpoints" / "dann"  # a stage's subfolder
  checkpoints.mkdir(parents=True)
  for n in (1, 2):
    (checkpoints / f"ckpt-{n}.index").write_bytes(b"")
    os.utime(checkpoints / f"ckpt-{n}.index", (n, n))
  error = tf.errors.ResourceExhaustedError(None, None, _TF_MESSAGE)
  message = cli.disk_full_message(error, str(tmp_path), can_resume=True)
  assert message == (
      f"no space left on device writing /runs/a/checkpoints/ckpt-7: free "
      f"space, then --resume continues from {checkpoints}/ckpt-2")
  assert cli.disk_full_message(OSError(errno.ENOSPC, "x")) == (
      "no space left on device: free space, then run it again")
  # The export: no --resume, and its claimed folder refuses a plain rerun.
  assert cli.disk_full_message(OSError(errno.ENOSPC, "x"), str(tmp_path),
                               can_overwrite=True).endswith(
                                   "then run it again with --overwrite "
                                   "(this run is moved aside)")


def test_exit_on_stop_exits_2_for_a_full_disk_only(capsys):
  with pytest.raises(SystemExit) as stopped:
    cli.exit_on_stop(OSError(errno.ENOSPC, "No space", "/r/summary.json"))
  assert stopped.value.code == cli.USER_ERROR_EXIT
  assert capsys.readouterr().err.splitlines() == [
      "error: no space left on device writing /r/summary.json: free space, "
      "then run it again"]
  cli.exit_on_stop(ValueError("a bug"))  # returns: re-raised by the caller


@pytest.fixture
def tiny_disk(tmp_path):
  """A 256 KiB tmpfs (root only)."""
  if os.geteuid() != 0:
    pytest.skip("needs root to mount a tmpfs")
  disk = tmp_path / "disk"
  disk.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k",
                            "tmpfs", str(disk)], capture_output=True,
                           check=False)
  if mounted.returncode:
    pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
  try:
    yield disk
  finally:
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_full_disk_keeps_previous_files_and_no_temp(tiny_disk, monkeypatch):
  summary = tiny_disk / "summary.json"
  atomic_write_json(str(summary), {"round": 1})
  with pytest.raises(OSError) as raised:
    atomic_write_json(str(summary), {"rows": ["x" * 1000] * 1000})
  assert is_disk_full(raised.value)
  assert disk_full_path(raised.value) == str(summary)
  # np.savez leaves its ZipFile open on the error; collected, it fails
  # again where Python can only print it: a binary's hook drops that.
  printed = []
  quiet = process_exit._unraisable_hook  # pylint: disable=protected-access
  monkeypatch.setattr(sys, "unraisablehook", quiet(printed.append))
  with pytest.raises(OSError) as raised:
    with atomic_output(str(tiny_disk / "round_3.npz")) as tmp:
      np.savez(tmp, a=np.zeros(100_000))
  assert disk_full_path(raised.value) == str(tiny_disk / "round_3.npz")
  del raised
  gc.collect()
  assert not printed
  assert json.loads(summary.read_text()) == {"round": 1}
  assert sorted(p.name for p in tiny_disk.iterdir()) == ["summary.json"]


def test_full_disk_checkpoint_save_keeps_the_previous_one(tiny_disk):
  variable = tf.Variable(np.ones((10_000,), np.float32))
  checkpoint = tf.train.Checkpoint(v=variable)
  manager = tf.train.CheckpointManager(checkpoint,
                                       str(tiny_disk / "checkpoints"),
                                       max_to_keep=None)
  first = manager.save()
  variable.assign(np.zeros((10_000,), np.float32))
  fill_filesystem(tiny_disk)
  with pytest.raises(tf.errors.OpError) as raised:
    manager.save()
  assert is_disk_full(raised.value)
  assert disk_full_path(raised.value) == str(
      tiny_disk / "checkpoints" / "ckpt-2")
  assert cli.disk_full_message(raised.value, str(tiny_disk), True).endswith(
      f"then --resume continues from {first}")
  checkpoint.read(first).assert_consumed()
  np.testing.assert_array_equal(variable.numpy(), np.ones((10_000,)))


def test_full_disk_releases_the_run_folder_lock(tiny_disk):
  out_dir = str(tiny_disk / "run")
  with pytest.raises(OSError):
    with run_folder.claim_run_folder(out_dir, {"seed": 1}, resume=False,
                                     overwrite=False):
      fill_filesystem(out_dir)
      atomic_write_json(os.path.join(out_dir, "summary.json"), {"a": 1})
  assert run_folder.LOCK_FILE not in os.listdir(out_dir)
  # The next run resumes it: no held-lock refusal.
  with run_folder.claim_run_folder(out_dir, {"seed": 1}, resume=True,
                                   overwrite=False):
    pass
