"""User-facing errors.

Binaries turn any `UserError` (and registry errors) into a one-line message
and exit status 2; everything else is a bug and keeps its traceback.
Interrupts (Ctrl-C, SIGTERM, a closed output pipe) are KeyboardInterrupts
that carry their exit status; see fedclf/process_exit.py.
"""

import errno
import re


class UserError(ValueError):
  """Bad input from the user: flags, sizes, files. The message is one line."""


class DataFileError(UserError):
  """A data file is missing, corrupt or has an unexpected checksum."""


class UnreadableCheckpointError(UserError):
  """A checkpoint cannot be read: truncated, garbled or missing a file.
  Resuming skips it for the previous one (see
  `fedclf.results.checkpoint_setting`)."""


class DivergenceError(UserError):
  """Training produced NaN or Inf; state written so far is kept."""


INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports Ctrl-C


class Terminated(KeyboardInterrupt):
  """SIGTERM (`kill`, a job scheduler, a grid stopping its run). A
  KeyboardInterrupt, so every path that checkpoints on Ctrl-C does so on
  SIGTERM too; only the exit status and the message differ."""
  exit_code = 143  # 128 + SIGTERM
  message = "terminated"


class OutputClosed(KeyboardInterrupt):
  """stdout or stderr is a pipe whose reader has gone (`... | head -1`):
  the run stops as on Ctrl-C instead of training on with no one to tell."""
  exit_code = 141  # 128 + SIGPIPE
  message = "stopped: output closed"


_SIGNAL_INTERRUPTS = {cls.__name__: cls for cls in (Terminated, OutputClosed)}
# pybind11 names both exception types when a Python exception raised inside
# a TensorFlow op comes back out of C++ (see `is_interrupt`).
_PYBIND_MISMATCH = "MISMATCH of original and normalized"


def _wrapped_interrupt_name(error: BaseException) -> str | None:
  if not isinstance(error, RuntimeError):
    return None
  text = str(error)
  if _PYBIND_MISMATCH in text:
    for name in _SIGNAL_INTERRUPTS:
      if re.search(rf"\b{name}\b", text):
        return name
  return "KeyboardInterrupt" if "KeyboardInterrupt" in text else None


def is_interrupt(error: BaseException) -> bool:
  """Whether `error` is a Ctrl-C, SIGTERM or closed output. One that lands
  inside a TensorFlow op (a tf.data iterator, say) can surface as
  pybind11's RuntimeError "MISMATCH of original and normalized active
  exception types ... REPLACED BY KeyboardInterrupt" (or by the name of one
  of the subclasses above) instead of the exception itself."""
  return (isinstance(error, KeyboardInterrupt) or
          _wrapped_interrupt_name(error) is not None)


def as_interrupt(error: BaseException) -> KeyboardInterrupt:
  """The interrupt to re-raise for `error` (`is_interrupt` is true): itself,
  or a fresh one of the type a pybind11 RuntimeError names, so the exit
  status still tells SIGTERM from Ctrl-C."""
  if isinstance(error, KeyboardInterrupt):
    return error
  cls = _SIGNAL_INTERRUPTS.get(_wrapped_interrupt_name(error) or "",
                               KeyboardInterrupt)
  return cls()


def interrupt_exit_code(error: KeyboardInterrupt) -> int:
  return getattr(error, "exit_code", INTERRUPTED_EXIT)


def interrupt_message(error: KeyboardInterrupt) -> str:
  return getattr(error, "message", "interrupted")


# errno values and message texts of a write that found no room: a full
# filesystem or an exhausted quota. TensorFlow's file ops (checkpoint
# saves, TensorBoard writers) report it as an OpError, usually
# ResourceExhaustedError, whose message carries the OS's text.
_DISK_FULL_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT")
    if hasattr(errno, name))
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")
# The file TensorFlow names before "; No space left on device".
_TF_PATH = re.compile(r"(/[^\s;]+?)(?:[;:,]\s*|\s+)(?:No space left on device"
                      r"|Disk quota exceeded)")


def _causes(error: BaseException):
  """`error` and the exceptions it was raised from or while handling."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def _disk_full_error(error: BaseException) -> BaseException | None:
  for e in _causes(error):
    if isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS:
      return e
    from_tf = type(e).__module__.startswith("tensorflow")
    if (from_tf or isinstance(e, (OSError, RuntimeError))) and any(
        text in str(e) for text in _DISK_FULL_TEXTS):
      return e
  return None


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` (or one it came from) is a write that found the disk
  full or the quota used up: OSError ENOSPC/EDQUOT from Python's writes,
  or a TensorFlow error (checkpoint save, TensorBoard writer) saying so.
  Binaries end on it with one line and exit 2 (`fedclf.cli.run`): the user
  frees space and resumes; the files written before are whole (atomic
  writes, checkpoints renamed into place only when complete)."""
  return _disk_full_error(error) is not None


def disk_full_path(error: BaseException) -> str | None:
  """The file whose write found the disk full, when `error` names it."""
  e = _disk_full_error(error)
  if e is None:
    return None
  if isinstance(e, OSError) and e.filename:
    return str(e.filename)
  match = _TF_PATH.search(str(e))
  if not match:
    return None
  # A checkpoint save writes `<prefix>_temp/part-...` and renames it into
  # place when whole: the checkpoint being written is `<prefix>`.
  return re.sub(r"_temp/[^/]*$", "", match.group(1))
