"""The results format every fedclf binary writes to its --out_dir.

- config.json: the full configuration, seed, package versions, git commit
  and command line (paths relative to the checkout; see
  fedclf/results/provenance.py), the absolute out_dir.
- source.patch: for a run from a checkout with uncommitted changes, their
  diff (`git apply` on the recorded commit recovers the code); config.json
  names it and its sha256.
- metrics.jsonl: one JSON object per evaluation (step/epoch/round, wall
  seconds since the run started, metrics).
- summary.json: final metrics, wall time, throughput.

Files are replaced atomically (write to a temporary file, then rename), so
an interrupted run never leaves a half-written summary or config behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from absl import logging
import numpy as np

import fedclf
from fedclf.errors import UserError
from fedclf.results import provenance

_VERSIONED_PACKAGES = ("tensorflow", "tensorflow-federated",
                       "tensorflow-datasets", "tensorflow-similarity", "numpy",
                       "scikit-learn", "absl-py")


def _jsonable(value: Any) -> Any:
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return _jsonable(dataclasses.asdict(value))
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/Inf; keep them visible as strings.
  return value


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
  """Yields a temporary file name beside `path` to write to; on success it
  is renamed over `path` (atomic on POSIX), on any error removed.

  For writers that take a file name (np.savez, savefig, Keras save): the
  temporary name keeps `path`'s extension, which they read the format from.
  A kill during the write leaves `path` as it was (plus a `.tmp-*` file).
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-",
                             suffix=os.path.splitext(path)[1])
  os.close(fd)
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, OSError) and not e.filename:
      # np.savez's ENOSPC names no file: name the one being written, for
      # the binary's one-line message (fedclf.errors.disk_full_path).
      e.filename = path
    raise


def atomic_write_text(path: str, text: str) -> None:
  with atomic_output(path) as tmp:
    with open(tmp, "w") as f:
      f.write(text)


def atomic_write_json(path: str, obj: Any) -> None:
  atomic_write_text(path, json.dumps(_jsonable(obj), indent=2,
                                     sort_keys=True) + "\n")


def read_metrics_file(path: str) -> List[Dict[str, Any]]:
  """The rows of a metrics.jsonl (none when it does not exist).

  Rows are appended one line at a time, not atomically: a kill during an
  append leaves a cut last line, which is left out with anything after it
  (everything before it is intact).
  """
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line:
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          break
  return rows


def git_commit() -> Dict[str, Any]:
  """The commit of the fedclf checkout this code runs from, if any."""
  root = provenance.code_root()
  try:
    # Dirty: tracked files differ from HEAD, as the dirty-tree warning of
    # simulations.reproduce counts them (untracked files go to the patch).
    return {"commit": provenance.head_commit(root),
            "dirty": bool(provenance.changed_files(root))}
  except (OSError, subprocess.SubprocessError):
    return {"commit": None, "dirty": None}


def onednn_enabled() -> Optional[bool]:
  """Whether TensorFlow runs its CPU ops with oneDNN's kernels (None: not
  known). It changes the floating-point order of a run's sums (same seed,
  last digits differ) and which paths the local backend can batch
  (fedclf/__init__.py)."""
  try:
    # pylint: disable-next=g-import-not-at-top
    from tensorflow.python.util import _pywrap_util_port
    return bool(_pywrap_util_port.IsMklEnabled())
  except (ImportError, AttributeError):
    return None


def environment_info() -> Dict[str, Any]:
  versions = {"python": platform.python_version(), "fedclf": fedclf.__version__}
  for name in _VERSIONED_PACKAGES:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  return {
      "versions": versions,
      "git": git_commit(),
      "platform": platform.platform(),
      "cpu_count": os.cpu_count(),
      "onednn": onednn_enabled(),
      # Portable: a reader's checkout is elsewhere (see provenance.py).
      "command": provenance.portable_command(sys.argv),
      "cwd": provenance.portable_path(os.getcwd()),
      "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
  }


def _read_json(path: str) -> Dict[str, Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _record_source_patch(out_dir: str, name: str, git: Dict[str, Any],
                         previous: Dict[str, Any]) -> Dict[str, Any]:
  """config.json's entries for the uncommitted code of the running
  checkout, written to `out_dir`/`name` ({} when there is none). The
  patch of `previous` (the record a resumed run continues) is named
  instead when it is the same code. Never fails the run: a patch that
  cannot be made or written is a warning."""
  root = provenance.code_root()
  if git.get("commit") is None:
    logging.warning("no %s: %s is not a git checkout (or git is missing), "
                    "so its code is not recorded", name, root)
    return {}
  try:
    patch = provenance.source_patch(root)
    if patch is None:
      return {}
    entries = {"source_patch": name,
               "source_patch_sha256": hashlib.sha256(patch.text).hexdigest(),
               "source_patch_untracked": patch.untracked}
    if patch.omitted:
      entries.update(source_patch_capped=True,
                     source_patch_omitted=patch.omitted)
    if (previous.get("source_patch") and
        previous.get("source_patch_sha256") == entries["source_patch_sha256"]
        and previous.get("git", {}).get("commit") == git["commit"]):
      return dict(entries, source_patch=previous["source_patch"])
    with atomic_output(os.path.join(out_dir, name)) as tmp:
      with open(tmp, "wb") as f:
        f.write(patch.text)
    return entries
  except (OSError, subprocess.SubprocessError) as e:
    logging.warning("no %s: cannot record the uncommitted code of %s (%s)",
                    name, root, e)
    return {}


def _columns(row: Dict[str, Any]) -> Tuple[str, ...]:
  return tuple(sorted(k for k in row if k != "wall_seconds"))


def _replay_key(step_name: str, step: int, row: Dict[str, Any]) -> tuple:
  """What tells a metrics row from the others: its step and its columns
  (a row logged again with these is the same row, replayed)."""
  return (step_name, row.get(step_name, step), _columns(row))


def _replay_keys(row: Dict[str, Any]) -> List[tuple]:
  """`_replay_key` of a row read back, for each column that may be its step
  (an integer one)."""
  return [_replay_key(k, v, row) for k, v in row.items()
          if isinstance(v, int) and not isinstance(v, bool)]


class RunRecorder:
  """Writes one run's results files under `out_dir`."""

  def __init__(self, out_dir: str, config: Dict[str, Any],
               resume: bool = False):
    self.out_dir = out_dir
    os.makedirs(out_dir, exist_ok=True)
    self.metrics_path = os.path.join(out_dir, "metrics.jsonl")
    self.summary_path = os.path.join(out_dir, "summary.json")
    # Stages that replay epochs on resume drop the rows they logged for
    # them first (see `drop_metrics`); a fresh run has none to drop.
    self.resumed = resume
    self._start = time.time()
    self._wall_offset = 0.0
    # The rows of the interrupted run, by `_replay_keys`: a resumed run
    # that logs one of them again replays it (`log_metrics`).
    self._logged_before: set = set()
    if resume and os.path.exists(self.metrics_path):
      # Wall time continues from where the interrupted run stopped.
      last = self.read_metrics()
      if last:
        self._wall_offset = float(last[-1].get("wall_seconds", 0.0))
      for row in last:
        self._logged_before.update(_replay_keys(row))
      # A kill during an append can leave a cut last line; new rows must
      # not be appended to it.
      self._rewrite_metrics(last)
    elif not resume and os.path.exists(self.metrics_path):
      # Never dropped silently: binaries claim their folder first (see
      # run_folder), so this is a library caller writing over a run.
      raise UserError(f"{out_dir} already holds a run (metrics.jsonl); "
                      f"resume it or write to another folder")
    record = {"config": config, **environment_info(), "resumed": resume,
              "out_dir": os.path.abspath(out_dir)}
    config_path = os.path.join(out_dir, "config.json")
    if resume and os.path.exists(config_path):
      # Keep the original record; note each resumption beside it, with
      # its own patch unless the code is the one the original ran.
      stamp = int(self._start)
      record.update(_record_source_patch(
          out_dir, f"source.resume-{stamp}.patch", record["git"],
          _read_json(config_path)))
      atomic_write_json(
          os.path.join(out_dir, f"config.resume-{stamp}.json"), record)
    else:
      record.update(_record_source_patch(out_dir, "source.patch",
                                         record["git"], {}))
      atomic_write_json(config_path, record)

  @property
  def wall_seconds(self) -> float:
    return self._wall_offset + time.time() - self._start

  def log_metrics(self, step: int, metrics: Dict[str, Any],
                  step_name: str = "step") -> None:
    row = {step_name: int(step), "wall_seconds": round(self.wall_seconds, 3)}
    row.update(_jsonable(metrics))
    key = _replay_key(step_name, int(step), row)
    if key in self._logged_before:
      # A resumed run replaying a row the interrupted one logged after its
      # last checkpoint (the test row after the final epoch, say): the
      # row moves to the end, as an uninterrupted run writes it, rather
      # than being repeated. Stages drop their own replayed epoch rows
      # first (`drop_metrics`), so those are only appended.
      self._logged_before.discard(key)
      self.drop_metrics(lambda r: _replay_key(step_name, int(step), r) == key)
    with open(self.metrics_path, "a") as f:
      f.write(json.dumps(row, sort_keys=True) + "\n")
      f.flush()

  def read_metrics(self):
    return read_metrics_file(self.metrics_path)

  def drop_metrics_after(self, step: int, step_name: str = "step") -> None:
    """Keeps the rows up to `step` (a resumed run replays the later ones)."""
    self.drop_metrics(lambda row: row.get(step_name, 0) > step)

  def drop_metrics(self, drop: Callable[[Dict[str, Any]], bool]) -> int:
    """Removes the rows for which `drop(row)` is true; the others stay, in
    order. Atomic: a kill leaves the file as it was before or after. A line
    cut by a kill is dropped too, with any after it (see `read_metrics`).

    Returns:
      How many rows were removed.
    """
    rows = self.read_metrics()
    kept = [row for row in rows if not drop(row)]
    self._rewrite_metrics(kept)
    return len(rows) - len(kept)

  def _rewrite_metrics(self, rows) -> None:
    atomic_write_text(self.metrics_path, "".join(
        json.dumps(r, sort_keys=True) + "\n" for r in rows))

  def write_summary(self, summary: Dict[str, Any]) -> None:
    summary = dict(summary)
    summary.setdefault("wall_seconds", round(self.wall_seconds, 3))
    atomic_write_json(self.summary_path, summary)

  def path(self, *parts: str) -> str:
    return os.path.join(self.out_dir, *parts)
