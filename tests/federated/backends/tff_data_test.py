"""The training arrays' files TFF workers read: named by their checksum,
checked before use, and gathered into a client's batches inside a graph
(without TFF, which the tff backend's tests import)."""

import os
import subprocess
import sys

import numpy as np
import portpicker
import pytest
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated.attacks import flip_labels
from fedclf.federated.backends import tff_data
from fedclf.federated.client_work import IndexedBatches

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def arrays():
  x = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
  y = np.array([0, 1, 2, 3, 4], np.int64)
  return x, y


def test_files_are_named_by_the_arrays_checksum(tmp_path):
  x, y = arrays()
  data = tff_data.write_worker_data(str(tmp_path), x, y)
  assert data.checksum == tff_data.data_checksum(x, y)
  assert os.path.getsize(data.path("x.bin")) == x.nbytes
  np.testing.assert_array_equal(
      np.fromfile(data.path("x.bin"), np.float32).reshape(x.shape), x)
  assert tff_data.check_worker_data(str(tmp_path), data.checksum) == data
  # Any changed value (or dtype/shape) is another checksum, another file.
  x2 = x.copy()
  x2[4, 1, 2] += 1
  assert tff_data.data_checksum(x2, y) != data.checksum
  assert tff_data.data_checksum(x.reshape(5, 6), y) != data.checksum


def test_existing_files_are_kept(tmp_path):
  x, y = arrays()
  data = tff_data.write_worker_data(str(tmp_path), x, y)
  os.utime(data.path("x.bin"), (1, 1))
  tff_data.write_worker_data(str(tmp_path), x, y)
  assert os.path.getmtime(data.path("x.bin")) == 1


def test_check_refuses_changed_or_missing_files(tmp_path):
  x, y = arrays()
  data = tff_data.write_worker_data(str(tmp_path), x, y)
  with open(data.path("y.bin"), "r+b") as f:
    f.write(b"\x07")
  with pytest.raises(UserError, match="does not match the driver's"):
    tff_data.check_worker_data(str(tmp_path), data.checksum)
  with pytest.raises(UserError, match="no TFF worker data with checksum"):
    tff_data.check_worker_data(str(tmp_path), "0" * 24)


def test_client_batches_gather_rows_of_the_mapped_files(tmp_path):
  x, y = arrays()
  data = tff_data.write_worker_data(str(tmp_path), x, y)
  mx, my = tff_data.mapped_arrays(data)
  matrix = tf.constant([[4, 1], [2, -1], [0, 3]], tf.int32)
  batches = IndexedBatches(mx, my, matrix, tf.constant(2))
  images, labels, mask = batches.get(0)
  np.testing.assert_array_equal(images, x[[4, 1]])
  np.testing.assert_array_equal(labels, [4, 1])
  images, labels, mask = batches.get(1)
  np.testing.assert_array_equal(images, np.stack([x[2], 0 * x[0]]))
  np.testing.assert_array_equal(mask, [1.0, 0.0])
  flipped = IndexedBatches(mx, flip_labels(my, True, 10), matrix, 1)
  np.testing.assert_array_equal(flipped.get(0)[1], [9 - 4, 9 - 1])
  # The driver's fingerprint of its arrays is the mapped files' one.
  np.testing.assert_array_equal(
      tff_data.fingerprint(mx, my),
      tff_data.fingerprint(tf.constant(x), tf.constant(y)))


def test_worker_binary_refuses_other_data_with_one_line(tmp_path):
  x, y = arrays()
  data = tff_data.write_worker_data(str(tmp_path), x, y)
  other = tff_data.data_checksum(x + 1, y)
  proc = subprocess.run(
      [sys.executable, "-m", "simulations.tff_worker",
       f"--port={portpicker.pick_unused_port()}", f"--data_dir={tmp_path}",
       f"--expect_data={other}"], cwd=ROOT, timeout=300,
      capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and other in lines[0], proc.stderr
  assert data.checksum != other
