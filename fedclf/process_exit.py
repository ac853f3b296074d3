"""How a binary's process ends: SIGTERM and a closed output pipe stop a
run the way Ctrl-C does, and TFF's teardown prints nothing.

`install()` (called by `fedclf.cli.run` before a binary's main) makes

  * SIGTERM raise `errors.Terminated` (exit 143);
  * a write to a stdout or stderr whose reader has gone (`... | head -1`)
    raise `errors.OutputClosed` (exit 141). Python ignores SIGPIPE, so such
    a write only raises BrokenPipeError, which logging swallows: without
    this a run whose log nobody reads trains on to its end. The closed
    stream is pointed at /dev/null at once, so the checkpoint save, the
    last message and Python's final flush write nowhere instead of failing;
  * SIGINT raise KeyboardInterrupt as usual (exit 130), noted as the run's
    interrupt.

Both are KeyboardInterrupts, so the loops' checkpoint-on-Ctrl-C paths
(fedclf/federated/round_loop.py, fedclf/train/epoch_driver.py) cover them.
Only the first SIGTERM or closed pipe raises: a repeat (a process group
signalled twice, a grid forwarding the signal its child also got, more log
lines to the closed pipe) would otherwise cut the checkpoint save short.
A second Ctrl-C still raises, to force a stuck save to stop.

An interrupt that lands where Python can only print it ("Exception ignored
in" a gc callback or a `__del__`) is raised again in the main thread, so
the run still stops. A disk-full error raised again where Python can only
print it (a writer the first such error left open, closed when collected)
prints nothing: the run has already said the disk is full, in one line.

It also drops, at exit, the default execution context that `import
tensorflow_federated` installs: its ServiceManager's `__del__` otherwise
runs during module teardown and prints an AttributeError traceback after
the run's own last line, whichever way the process ends.

The TFF backend's handlers (fedclf/federated/backends/tff_workers.py) are
installed later and chain to these after stopping their workers.
"""

from __future__ import annotations

import _thread
import atexit
import os
import select
import signal
import subprocess
import sys
import threading

from fedclf.errors import OutputClosed
from fedclf.errors import is_disk_full
from fedclf.errors import Terminated

_OUTPUT_FDS = (1, 2)
# Set by the first interrupt of the process: later SIGTERMs and SIGPIPEs are
# ignored while the run saves its checkpoint and exits.
_stopping = False


def _closed_pipes() -> list[int]:
  """Which of stdout and stderr are pipes with no reader left. Linux (and
  the BSDs) report POLLERR on the write end of such a pipe; a terminal, a
  file or a pipe still read reports none."""
  poller = select.poll()
  for fd in _OUTPUT_FDS:
    poller.register(fd, select.POLLOUT)
  return [fd for fd, events in poller.poll(0)
          if events & select.POLLERR and not events & select.POLLNVAL]


def silence_closed_outputs() -> bool:
  """Points a stdout or stderr whose reader has gone at /dev/null, so later
  writes (and Python's flush at exit) neither fail nor print "Exception
  ignored ... BrokenPipeError". Returns whether one was closed."""
  closed = _closed_pipes()
  if closed:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
      for fd in closed:
        os.dup2(devnull, fd)
    finally:
      os.close(devnull)
  return bool(closed)


def output_closed() -> OutputClosed | None:
  """For a BrokenPipeError caught by a binary: the OutputClosed to raise
  instead when stdout or stderr is a closed pipe, else None (some other
  pipe broke: a real error). Marks the run as stopping."""
  global _stopping
  if not silence_closed_outputs():
    return None
  _stopping = True
  return OutputClosed()


# An interrupt raised where Python can only print it ("Exception ignored
# in ...": a gc callback, a __del__), kept by `_unraisable_hook` until the
# main thread raises it again in one of the handlers below.
_lost: KeyboardInterrupt | None = None


def _raise_lost() -> None:
  global _lost
  if _lost is not None:
    lost, _lost = _lost, None
    raise lost


def _on_sigterm(signum: int, frame) -> None:
  del signum, frame
  _raise_lost()
  global _stopping
  if _stopping:
    return
  _stopping = True
  raise Terminated()


def _on_sigpipe(signum: int, frame) -> None:
  del signum, frame
  _raise_lost()
  global _stopping
  # A pipe other than ours (a child's stdin, say): the write that broke
  # raises BrokenPipeError to its caller, as without this handler.
  if not silence_closed_outputs() or _stopping:
    return
  _stopping = True
  raise OutputClosed()


def _on_sigint(signum: int, frame) -> None:
  _raise_lost()
  global _stopping
  _stopping = True
  signal.default_int_handler(signum, frame)


_TFF_CONTEXTS = "tensorflow_federated.python.core.impl.context_stack."


def _release_tff_default_context() -> None:
  """Replaces TFF's import-time default context while modules are intact,
  so its ServiceManager is freed now (it never started a worker: fedclf
  runs TFF on its own, `tff_context`) rather than in module teardown,
  where its `__del__` finds `subprocess` gone. Looked up in sys.modules:
  a process that never imported TFF does not import it here."""
  stack = sys.modules.get(_TFF_CONTEXTS + "context_stack_impl")
  errors = sys.modules.get(_TFF_CONTEXTS + "runtime_error_context")
  if stack is None or errors is None:
    return
  try:
    stack.context_stack.set_default_context(errors.RuntimeErrorContext())
  except Exception:  # pylint: disable=broad-except
    pass  # a TFF version without these: its noise, not a failure of ours


def _raise_again(interrupt: KeyboardInterrupt) -> bool:
  """Has the main thread raise `interrupt` once it is out of the callback
  (10 ms on, from another thread: delivered now it would land in this very
  hook), via a handler of ours (`_thread.interrupt_main`); one that lands
  in a callback again comes back here. False if no handler of ours is
  installed."""
  global _lost
  for signum, handler in ((signal.SIGINT, _on_sigint),
                          (signal.SIGTERM, _on_sigterm),
                          (signal.SIGPIPE, _on_sigpipe)):
    if signal.getsignal(signum) is handler:
      _lost = interrupt
      timer = threading.Timer(0.01, _thread.interrupt_main, (signum,))
      timer.daemon = True
      timer.start()
      return True
  return False


def _unraisable_hook(previous):
  """The unraisable-exception hook of a binary:

  * an interrupt (Ctrl-C, SIGTERM, closed output) that landed in a gc
    callback or a `__del__` (jax's `_xla_gc_callback`, say) would only be
    printed there, and the run would go on to its end: it is raised again
    in the main thread instead;
  * a disk-full error is dropped: a writer left open by the error that
    ended the run (np.savez's ZipFile) fails again when it is collected,
    and the run has already said, in one line, that the disk is full
    (fedclf.cli).
  """
  def hook(unraisable) -> None:
    error = unraisable.exc_value
    if isinstance(error, KeyboardInterrupt) and _raise_again(error):
      return
    if not is_disk_full(error):
      previous(unraisable)
  hook.fedclf_hook = True
  return hook


_installed = False


def guard_startup_interrupts() -> None:
  """From a binary's first import (fedclf.cli), before it imports
  TensorFlow: a Ctrl-C that lands in a gc callback while TensorFlow, TFF
  and jax import (jax's `_xla_gc_callback`) is raised again in the main
  thread, as `install` has it for the rest of the run, instead of being
  printed and lost (the binary then trained on as if never interrupted;
  seen with a Ctrl-C 9-10 s after start under load). Only SIGINT's
  handler and the unraisable hook: SIGTERM and SIGPIPE keep their default,
  ending the process outright, until `install`, as nothing is written yet.
  """
  if not getattr(sys.unraisablehook, "fedclf_hook", False):
    sys.unraisablehook = _unraisable_hook(sys.unraisablehook)
  if (threading.current_thread() is threading.main_thread() and
      signal.getsignal(signal.SIGINT) == signal.default_int_handler):
    signal.signal(signal.SIGINT, _on_sigint)


def install() -> None:
  """Installs the handlers; only from the main thread (elsewhere Python
  refuses), and never over a signal the user asked to ignore (`nohup`,
  a background job's SIGINT)."""
  global _stopping, _installed
  if not _installed:
    atexit.register(_release_tff_default_context)
    _installed = True
  guard_startup_interrupts()  # the unraisable hook and SIGINT's handler
  if threading.current_thread() is not threading.main_thread():
    return
  _stopping = False
  if signal.getsignal(signal.SIGTERM) != signal.SIG_IGN:
    signal.signal(signal.SIGTERM, _on_sigterm)
  # Python itself ignores SIGPIPE (so a parent's choice cannot be told);
  # children get the default back (subprocess's restore_signals).
  signal.signal(signal.SIGPIPE, _on_sigpipe)


def stop_child(process: subprocess.Popen) -> None:
  """Stops a child binary after this process was interrupted: SIGTERM, so
  it checkpoints and exits (if it got the same Ctrl-C or SIGTERM, it
  ignores this repeat), then waits for it. Another interrupt meanwhile
  kills it."""
  try:
    if process.poll() is None:
      process.terminate()
    process.wait()
  except BaseException:
    process.kill()
    process.wait()
    raise
