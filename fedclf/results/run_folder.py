"""One run per folder: the claim a binary takes on its --out_dir.

A run folder is never destroyed or silently reused:
- a folder that already holds a run (finished or partial) is refused unless
  the caller resumes it or asks to overwrite it;
- overwriting renames the old run aside (`<out_dir>.old-<time>`), it never
  deletes a byte;
- resuming first compares the run's *setting* (the flags that change its
  result, stored in `setting.json` when the run started) with the new one
  and refuses, naming the flags, when they differ;
- a lock file keeps two processes out of one folder; a lock left by a
  process that no longer runs (kill -9, power loss) is taken over with a
  warning.

Everything is checked before the caller loads data or builds a model, so
a bad `--out_dir` fails in a second, not after the data is partitioned.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import hashlib
import json
import os
import socket
import time
from typing import Any, Dict, List, Mapping, Optional

from absl import logging

from fedclf.errors import UserError
from fedclf.results.record import atomic_write_json

# Any of these in a folder (or in one of its subfolders: the seed_<s> and
# centralized/ runs nested in a run) means the folder holds a run.
RUN_MARKERS = ("config.json", "metrics.jsonl", "summary.json", "checkpoints")
SETTING_FILE = "setting.json"
LOCK_FILE = ".fedclf.lock"

# Flags that do not change what a run computes, so a resumed run may differ
# in them from the run it continues:
# - where things are and how the run is driven: out_dir, resume, overwrite,
#   flagfile (its values are the flags themselves), plugin (import paths;
#   the registered names a plugin provides are flags of their own), list,
#   data_dir and download (the same data, found or fetched elsewhere);
# - how often state is saved: checkpoint_every;
# - the length of the run: rounds and epochs, so a finished run can be
#   resumed with more of them (with a schedule that depends on the total,
#   e.g. cosine, the extension follows the new total from there on);
# - the execution strategy of federated rounds, which the backend parity
#   tests hold to the same result: backend, parallel_clients,
#   client_batching, tff_workers, tff_data_dir, tff_clients_per_call.
NOT_SETTING_FLAGS = ("out_dir", "resume", "overwrite", "flagfile", "plugin",
                     "list", "data_dir", "download", "checkpoint_every",
                     "rounds", "epochs", "backend", "parallel_clients",
                     "client_batching", "tff_workers", "tff_data_dir",
                     "tff_clients_per_call")

# A lock file with no readable holder is one being written right now,
# unless it is older than this (its writer died between create and write).
_UNREADABLE_LOCK_GRACE_S = 60.0


def run_setting(flag_values: Mapping[str, Any]) -> Dict[str, Any]:
  """The flags of `flag_values` that change a run's result (JSON values)."""
  return {name: _canonical(value) for name, value in flag_values.items()
          if name not in NOT_SETTING_FLAGS}


def setting_hash(setting: Mapping[str, Any]) -> str:
  return hashlib.sha256(json.dumps(setting, sort_keys=True).encode()
                        ).hexdigest()


def _canonical(value: Any) -> Any:
  # Tuples and lists, ints and floats as JSON has them, so a stored setting
  # compares equal to the same flags parsed again.
  return json.loads(json.dumps(value, sort_keys=True, default=str))


def existing_run(out_dir: str) -> Optional[str]:
  """The first run file (relative path) in `out_dir` or a subfolder of it,
  or None when the folder holds no run."""
  if not os.path.isdir(out_dir):
    return None
  for marker in RUN_MARKERS:
    if os.path.lexists(os.path.join(out_dir, marker)):
      return marker
  for entry in sorted(os.listdir(out_dir)):
    sub = os.path.join(out_dir, entry)
    if entry == "checkpoints" or not os.path.isdir(sub):
      continue
    for marker in RUN_MARKERS:
      if os.path.lexists(os.path.join(sub, marker)):
        return os.path.join(entry, marker)
  return None


def has_checkpoints(out_dir: str) -> bool:
  """Whether `out_dir` or one of its nested runs has checkpoints to resume."""
  if os.path.isdir(os.path.join(out_dir, "checkpoints")):
    return True
  if not os.path.isdir(out_dir):
    return False
  return any(os.path.isdir(os.path.join(out_dir, entry, "checkpoints"))
             for entry in os.listdir(out_dir))


# -- the lock -----------------------------------------------------------------

def _process_start(pid: int) -> Optional[str]:
  """The start time of process `pid` (clock ticks since boot, Linux), which
  tells a live holder from an unrelated process that reused its pid."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      stat = f.read()
  except OSError:
    return None
  # Field 22; the command name (field 2) may hold spaces, so count after
  # its closing parenthesis.
  fields = stat[stat.rfind(")") + 2:].split()
  return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Someone else's process: alive.
  return True


def _holder_record() -> Dict[str, Any]:
  return {"pid": os.getpid(), "host": socket.gethostname(),
          "pid_start": _process_start(os.getpid()),
          "started_utc": datetime.datetime.now(
              datetime.timezone.utc).isoformat(timespec="seconds")}


def _read_holder(path: str) -> Optional[Dict[str, Any]]:
  try:
    with open(path) as f:
      holder = json.load(f)
  except (OSError, ValueError):
    return None
  return holder if isinstance(holder, dict) and "pid" in holder else None


def _stale_reason(path: str, holder: Optional[Dict[str, Any]]
                  ) -> Optional[str]:
  """Why the lock at `path` is stale, or None while its holder may run."""
  if holder is None:
    try:
      age = time.time() - os.path.getmtime(path)
    except OSError:
      return "it is gone"
    if age <= _UNREADABLE_LOCK_GRACE_S:
      return None
    return f"it is unreadable and {age:.0f}s old"
  if holder.get("host") != socket.gethostname():
    return None  # Another machine's process: it cannot be checked from here.
  pid = int(holder["pid"])
  if not _pid_alive(pid):
    return f"its process {pid} no longer runs"
  start = holder.get("pid_start")
  if start is not None and _process_start(pid) not in (None, start):
    return f"pid {pid} now belongs to another process"
  return None


def held_elsewhere(out_dir: str) -> bool:
  """Whether another live process holds `out_dir`'s lock (a grid started
  twice: the other one is running this run)."""
  path = os.path.join(out_dir, LOCK_FILE)
  if not os.path.exists(path):
    return False
  return _stale_reason(path, _read_holder(path)) is None


def _refuse_held(out_dir: str, path: str,
                 holder: Optional[Dict[str, Any]]) -> UserError:
  if holder is None:
    return UserError(f"run folder {out_dir} is being claimed by another "
                     f"process right now ({path}); try again in a minute")
  return UserError(
      f"run folder {out_dir} is in use by pid {holder.get('pid')} on "
      f"{holder.get('host')} since {holder.get('started_utc')}; wait for it "
      f"to finish, or delete {path} if that process is gone")


def _take_over(path: str, holder: Optional[Dict[str, Any]]) -> bool:
  """Removes the stale lock `holder` from `path`; False when another process
  replaced it meanwhile (it is then left, or put back, in place)."""
  aside = f"{path}.stale-{os.getpid()}"
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return True  # Another process removed it first; try to create ours.
  if _read_holder(aside) != holder:
    # A live claim landed between our read and the rename: put it back.
    try:
      os.link(aside, path)
    except FileExistsError:
      pass
    os.remove(aside)
    return False
  os.remove(aside)
  return True


def _create_lock(out_dir: str) -> str:
  """Creates `out_dir`'s lock file for this process (taking over a stale
  one) and returns its path; UserError when another process holds it or
  the folder cannot be written."""
  path = os.path.join(out_dir, LOCK_FILE)
  for _ in range(3):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder = _read_holder(path)
      reason = _stale_reason(path, holder)
      if reason is None:
        raise _refuse_held(out_dir, path, holder) from None
      logging.warning("taking over the stale lock %s (%s)", path, reason)
      if not _take_over(path, holder):
        raise _refuse_held(out_dir, path, _read_holder(path)) from None
      continue
    except OSError as e:
      raise UserError(f"cannot write in --out_dir {out_dir}: "
                      f"{e.strerror or e}") from None
    try:
      with os.fdopen(fd, "w") as f:
        json.dump(_holder_record(), f)
    except OSError as e:
      os.remove(path)
      raise UserError(f"cannot write in --out_dir {out_dir}: "
                      f"{e.strerror or e}") from None
    return path
  raise _refuse_held(out_dir, path, _read_holder(path))


def _remove_own_lock(path: str) -> None:
  holder = _read_holder(path)
  if holder is not None and holder.get("pid") == os.getpid() and (
      holder.get("host") == socket.gethostname()):
    try:
      os.remove(path)
    except FileNotFoundError:
      pass


# -- the claim ----------------------------------------------------------------

@dataclasses.dataclass
class RunFolderLock:
  """This process's claim on a run folder; `release` (or leaving the `with`
  block) removes the lock. A folder the run left without any run file gets
  back to how it was: the claim's setting.json goes, and the folder too if
  the claim created it and it is empty."""
  out_dir: str
  lock_path: str
  setting: Dict[str, Any]
  moved_aside_to: Optional[str] = None
  created_folder: bool = False
  wrote_setting: bool = False
  released: bool = False

  def __post_init__(self):
    # Also on a normal interpreter exit that skips the `with` (os._exit and
    # kill -9 skip both; the next claim finds that lock stale).
    atexit.register(self.release)

  def __enter__(self) -> "RunFolderLock":
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()

  def release(self) -> None:
    if self.released:
      return
    self.released = True
    atexit.unregister(self.release)
    if self.wrote_setting and existing_run(self.out_dir) is None:
      _remove_quietly(os.path.join(self.out_dir, SETTING_FILE))
    _remove_own_lock(self.lock_path)
    if self.created_folder:
      try:
        os.rmdir(self.out_dir)  # Only if empty.
      except OSError:
        pass


def _remove_quietly(path: str) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def _make_folder(out_dir: str) -> bool:
  """Creates `out_dir` (and parents); True if it did not exist."""
  if os.path.isdir(out_dir):
    return False
  try:
    os.makedirs(out_dir)
  except FileExistsError:
    if not os.path.isdir(out_dir):
      raise UserError(f"cannot create --out_dir {out_dir}: a file is in the "
                      f"way") from None
    return False  # Another process created it meanwhile.
  except OSError as e:
    raise UserError(f"cannot create --out_dir {out_dir}: "
                    f"{e.strerror or e}") from None
  return True


# `--overwrite` renames a run to `<out_dir>.old-<time>`: kept, not a result.
MOVED_ASIDE = ".old-"


def is_moved_aside(folder_name: str) -> bool:
  """Whether a folder is a run that `--overwrite` moved aside."""
  return MOVED_ASIDE in folder_name


def _aside_name(out_dir: str) -> str:
  stamp = time.strftime("%Y%m%d-%H%M%S")
  base = f"{os.path.normpath(out_dir)}{MOVED_ASIDE}{stamp}"
  name, n = base, 1
  while os.path.lexists(name):
    n += 1
    name = f"{base}-{n}"
  return name


def _move_aside(out_dir: str, lock_path: str) -> str:
  """Renames the run in `out_dir` (locked by us) aside; returns its name."""
  aside = _aside_name(out_dir)
  try:
    os.rename(out_dir, aside)
  except OSError as e:
    raise UserError(f"--overwrite: cannot move {out_dir} aside to {aside}: "
                    f"{e.strerror or e}") from None
  # Our lock went along; the old run is kept exactly as it was.
  _remove_own_lock(os.path.join(aside, os.path.basename(lock_path)))
  logging.warning("--overwrite: moved the previous run in %s to %s",
                  out_dir, aside)
  return aside


def stored_setting(out_dir: str) -> Optional[Dict[str, Any]]:
  """The setting the run in `out_dir` started with: its setting.json, or
  for a run older than setting.json the flags in its config.json."""
  path = os.path.join(out_dir, SETTING_FILE)
  try:
    with open(path) as f:
      return dict(json.load(f)["setting"])
  except (OSError, ValueError, KeyError, TypeError):
    pass
  try:
    with open(os.path.join(out_dir, "config.json")) as f:
      flags = json.load(f)["config"]["flags"]
  except (OSError, ValueError, KeyError, TypeError):
    return None
  return run_setting(flags) if isinstance(flags, dict) else None


def differing_flags(stored: Mapping[str, Any], setting: Mapping[str, Any]
                    ) -> List[str]:
  """`--name=old (now new)` for every flag both settings have and that
  differs. A flag only one side has comes from another version of fedclf
  (added or removed since) and is not compared."""
  return [f"--{name}={json.dumps(stored[name])} (now "
          f"{json.dumps(setting[name])})"
          for name in sorted(set(stored) & set(setting))
          if _canonical(stored[name]) != _canonical(setting[name])]


def _check_resumable(out_dir: str, setting: Dict[str, Any]) -> None:
  stored = stored_setting(out_dir)
  if stored is None:
    logging.warning("--resume: %s records no setting to compare with; "
                    "resuming unchecked", out_dir)
    return
  differ = differing_flags(stored, setting)
  if differ:
    raise UserError(
        f"--resume: the run in {out_dir} has another setting: "
        f"{', '.join(differ)}; resume with its flags, or pass --overwrite "
        f"to move it aside and start afresh")
  only_one_side = sorted(set(stored) ^ set(setting))
  if only_one_side:
    logging.warning("--resume: flags %s are not in both the stored and the "
                    "new setting (another fedclf version); not compared",
                    ", ".join(only_one_side))


def _write_setting(out_dir: str, setting: Dict[str, Any]) -> None:
  atomic_write_json(os.path.join(out_dir, SETTING_FILE),
                    {"setting": setting, "sha256": setting_hash(setting)})


def claim_run_folder(out_dir: str, setting: Dict[str, Any], resume: bool,
                     overwrite: bool, can_resume: bool = True
                     ) -> RunFolderLock:
  """Claims `out_dir` for one run of `setting`: the run's flags (those in
  NOT_SETTING_FLAGS are left out, see `run_setting`).

  Creates the folder and locks it; a folder holding a run is refused
  unless `resume` (its stored setting must match) or `overwrite` (it is
  renamed aside first). `can_resume`: whether the caller offers --resume
  (the refusal names it). Use the result as a context manager. Every
  refusal is a one-line UserError.
  """
  if resume and overwrite:
    raise UserError("--resume continues the run in --out_dir and "
                    "--overwrite moves it aside; pass one of them")
  if not out_dir:
    raise UserError("--out_dir must not be empty")
  setting = run_setting(setting)
  created = _make_folder(out_dir)
  lock = RunFolderLock(out_dir, _create_lock(out_dir), setting,
                       created_folder=created)
  try:
    found = existing_run(out_dir)
    if found and overwrite:
      lock.moved_aside_to = _move_aside(out_dir, lock.lock_path)
      lock.created_folder = _make_folder(out_dir)
      lock.lock_path = _create_lock(out_dir)
      found = None
    if found and not resume:
      resume_hint = "--resume to continue it or " if can_resume else ""
      raise UserError(
          f"--out_dir {out_dir} already holds a run ({found}); pass "
          f"{resume_hint}--overwrite to move it aside and start afresh")
    if found:
      _check_resumable(out_dir, setting)
    if not found or not os.path.exists(os.path.join(out_dir, SETTING_FILE)):
      _write_setting(out_dir, setting)
      lock.wrote_setting = not found
  except BaseException:
    lock.release()
    raise
  return lock
