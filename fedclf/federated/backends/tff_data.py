"""The training arrays as TFF workers read them: files on the worker's
machine, memory-mapped by the round's graph, so only index matrices cross
the wire.

Why files and not a dataset captured in the computation: TFF 0.87's
`RemoteExecutor` serializes every computation it calls, nested TensorFlow
graphs included, into each round's `CreateValue` request; the C++ worker
caches the built session by `cache_key`, but only after receiving the bytes
again. Worker-side state cannot hold the arrays either: the worker's
`SessionProvider` moves every resource op into a per-session container and
clears it after each call. What is left is a graph that names a file:
`tf.raw_ops.ImmutableConst` maps it (no copy; the kernel's page cache is
shared by every session and worker on the machine), and `tf.gather` takes a
client's rows. The graph carries the path and the shape, a few hundred
bytes.

The files (`fedclf_tffdata_<checksum>.x.bin`, `.y.bin`: the raw C-order
bytes of `x` float32 and `y` int64; `.json`: their shapes) are named by a
checksum of the arrays, so a worker never reads another run's data by
mistake; `check_worker_data` recomputes it (what `simulations.tff_worker
--data_dir --expect_data` runs before it serves).

This module imports neither TensorFlow nor TFF at import time (the worker
binary's wrapper uses it before exec).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from typing import Tuple

import numpy as np

from fedclf.errors import UserError

_PREFIX = "fedclf_tffdata_"
# Hashing in blocks keeps the peak memory of a check at one block.
_BLOCK_BYTES = 1 << 24


def default_data_dir() -> str:
  """Where the driver writes the files for workers on its own machine."""
  return os.path.join(tempfile.gettempdir(), "fedclf_tff_data")


@dataclasses.dataclass(frozen=True)
class WorkerData:
  """The arrays' files as a worker sees them: directory, checksum, shapes."""
  directory: str
  checksum: str
  x_shape: Tuple[int, ...]
  y_shape: Tuple[int, ...]

  def path(self, part: str) -> str:
    return os.path.join(self.directory, f"{_PREFIX}{self.checksum}.{part}")


def _hash_update(digest, array: np.ndarray) -> None:
  digest.update(f"{array.dtype.str}{array.shape}".encode())
  flat = array.reshape(-1).view(np.uint8)
  for start in range(0, flat.size, _BLOCK_BYTES):
    digest.update(flat[start:start + _BLOCK_BYTES])


def data_checksum(x: np.ndarray, y: np.ndarray) -> str:
  """A sha256 prefix of the arrays' dtypes, shapes and bytes."""
  digest = hashlib.sha256()
  _hash_update(digest, np.ascontiguousarray(x, np.float32))
  _hash_update(digest, np.ascontiguousarray(y, np.int64))
  return digest.hexdigest()[:24]


def _write_atomically(path: str, write) -> None:
  """Writes through a temporary name: a worker never maps half a file."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    # mkstemp's 0600 would hide the file from a worker run by another user.
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _size(path: str) -> int:
  return os.path.getsize(path) if os.path.exists(path) else -1


def write_worker_data(directory: str, x: np.ndarray,
                      y: np.ndarray) -> WorkerData:
  """Writes the arrays' files into `directory` (kept if already there, as
  their name is their checksum) and returns where they are."""
  x = np.ascontiguousarray(x, np.float32)
  y = np.ascontiguousarray(y, np.int64)
  data = WorkerData(directory, data_checksum(x, y), x.shape, y.shape)
  try:
    os.makedirs(directory, exist_ok=True)
    for part, array in (("x.bin", x), ("y.bin", y)):
      if _size(data.path(part)) != array.nbytes:
        _write_atomically(data.path(part), lambda f, a=array: a.tofile(f))
    meta = json.dumps({"x_shape": x.shape, "y_shape": y.shape}).encode()
    _write_atomically(data.path("json"), lambda f: f.write(meta))
  except OSError as e:
    raise UserError(f"cannot write the TFF workers' data to {directory}: "
                    f"{e.strerror or e}") from None
  return data


def read_worker_data(directory: str, checksum: str) -> WorkerData:
  """The files' description from their `.json`; UserError when missing."""
  data = WorkerData(directory, checksum, (), ())
  try:
    with open(data.path("json"), encoding="utf-8") as f:
      meta = json.load(f)
  except (OSError, ValueError):
    raise UserError(f"no TFF worker data with checksum {checksum} in "
                    f"{directory} (missing or unreadable "
                    f"{os.path.basename(data.path('json'))}); copy the "
                    f"files {_PREFIX}{checksum}.* the driver wrote "
                    f"there") from None
  return dataclasses.replace(data, x_shape=tuple(meta["x_shape"]),
                             y_shape=tuple(meta["y_shape"]))


def check_worker_data(directory: str, checksum: str) -> WorkerData:
  """Recomputes the files' checksum; UserError unless it is `checksum`."""
  data = read_worker_data(directory, checksum)
  try:
    x = np.memmap(data.path("x.bin"), np.float32, "r", shape=data.x_shape)
    y = np.memmap(data.path("y.bin"), np.int64, "r", shape=data.y_shape)
  except (OSError, ValueError) as e:
    raise UserError(f"TFF worker data {checksum} in {directory} is "
                    f"unreadable: {e}") from None
  found = data_checksum(x, y)
  if found != checksum:
    raise UserError(f"TFF worker data in {directory} does not match the "
                    f"driver's: checksum {found}, expected {checksum}")
  return data


# -- inside the round's graph (TensorFlow imported by the caller) ----------
def mapped_arrays(data: WorkerData):
  """The worker's x and y as tensors mapped from its files (graph ops)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = tf.raw_ops.ImmutableConst(dtype=tf.float32, shape=data.x_shape,
                                memory_region_name=data.path("x.bin"))
  y = tf.raw_ops.ImmutableConst(dtype=tf.int64, shape=data.y_shape,
                                memory_region_name=data.path("y.bin"))
  return x, y


def fingerprint(x, y):
  """8 bytes of `tf.fingerprint` over x's and y's rows each: the driver
  computes it on its arrays, a worker on its mapped files."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def of(t):
    rows = tf.fingerprint(tf.reshape(t, [tf.shape(t)[0], -1]))
    return tf.fingerprint(tf.reshape(rows, [1, -1]))[0]

  return tf.concat([of(x), of(y)], axis=0)
