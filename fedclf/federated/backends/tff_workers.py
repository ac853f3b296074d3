"""TFF C++ worker processes that fedclf starts, owns and always stops.

Why this module exists: `import tensorflow_federated` installs a default
context (`local_cpp_executor_factory`) that starts TFF's C++ `worker_binary`
lazily, hands it the parent's stdout/stderr and never stops it at interpreter
exit. The orphan keeps the pipe open, so `python -m ... | cat` hangs, and
every crashed run leaks a worker. fedclf therefore starts workers itself
(`start_local_worker`) and connects TFF to them (`tff_context.TffRuntime`).
Remote workers are started with `python -m simulations.tff_worker --port=N`
and are not owned.

Owned workers are killed on every exit path:
  * `WorkerProcess.stop` (`TffRuntime.__exit__` calls it, also on exceptions
    propagating out of the block);
  * `atexit` (normal interpreter exit, uncaught exceptions, KeyboardInterrupt);
  * SIGTERM, SIGINT and SIGHUP handlers, which stop the workers and then
    defer to the previous handler (SIGINT: KeyboardInterrupt as usual) or die
    by the same signal, so the exit status stays conventional (128 + signal).
    Under `fedclf.cli.run` the previous SIGTERM handler raises
    `errors.Terminated` (fedclf/process_exit.py), so the run checkpoints
    as on Ctrl-C; elsewhere a SIGTERM ends the process at once, without
    running `finally` blocks. Code that catches the interrupt finds its owned
    workers gone (the next TFF call raises WorkerError; a terminal's Ctrl-C
    reaches the workers directly anyway). Handlers are installed only from
    the main thread and only for signals that are not ignored;
  * abrupt death of the parent (SIGKILL, segfault): on Linux the worker is
    started with prctl(PR_SET_PDEATHSIG, SIGKILL), so the kernel kills it.
Workers never inherit the parent's stdout/stderr: they log to a temporary
file (deleted when the worker is stopped; its tail goes into error messages).

This module does not import TFF (it finds the worker binary without
importing the package), so `simulations.tff_worker` and the tests start
workers without TFF's ~50 s import.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import importlib.util
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

from absl import logging
import grpc
import portpicker

# Same limits as TFF's own local context: model weights travel as one message.
_GRPC_MAX_MESSAGE_LENGTH_BYTES = 2 * 1000 * 1000 * 1000
GRPC_CHANNEL_OPTIONS = (
    ("grpc.max_message_length", _GRPC_MAX_MESSAGE_LENGTH_BYTES),
    ("grpc.max_receive_message_length", _GRPC_MAX_MESSAGE_LENGTH_BYTES),
    ("grpc.max_send_message_length", _GRPC_MAX_MESSAGE_LENGTH_BYTES),
)

DEFAULT_READY_TIMEOUT_S = 60.0
# How long a worker gets to exit after SIGINT before it is SIGKILLed.
DEFAULT_STOP_GRACE_S = 2.0
# Tries with a fresh port when a picked port was taken before the worker bound
# it (portpicker cannot reserve a port for another process).
_PORT_RETRIES = 3
_PR_SET_PDEATHSIG = 1
_LOG_TAIL_BYTES = 2000


class WorkerError(RuntimeError):
  """A local TFF worker failed to start, or died while it was in use."""


def worker_binary_path() -> str:
  """Returns the path of TFF's C++ `worker_binary` without importing TFF.

  Raises:
    WorkerError: tensorflow_federated or its worker binary is not installed.
  """
  # find_spec locates the package without running its (~50 s) import.
  spec = importlib.util.find_spec("tensorflow_federated")
  if spec is None or not spec.submodule_search_locations:
    raise WorkerError("tensorflow_federated is not installed")
  package_dir = list(spec.submodule_search_locations)[0]
  path = os.path.join(package_dir, "data", "worker_binary")
  if not os.path.isfile(path) or not os.access(path, os.X_OK):
    raise WorkerError(f"TFF worker binary not found (or not executable) at "
                      f"{path}")
  return path


def _tail(path: str | None, limit: int = _LOG_TAIL_BYTES) -> str:
  if not path:
    return ""
  try:
    with open(path, "rb") as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - limit))
      return f.read().decode("utf-8", "replace").strip()
  except OSError:
    return ""


class WorkerProcess:
  """A `worker_binary` child of this process, serving on localhost:port
  (127.0.0.1 only where the bind library can be built, see
  `fedclf.federated.bind_address`)."""

  def __init__(self, process: subprocess.Popen, port: int,
               log_path: str | None, delete_log: bool):
    self.process = process
    self.port = port
    self.log_path = log_path
    self._delete_log = delete_log
    # Forked children (multiprocessing) inherit the registry and atexit
    # hooks; only the process that started the worker may stop it.
    self.owner_pid = os.getpid()

  @property
  def pid(self) -> int:
    return self.process.pid

  @property
  def address(self) -> str:
    return f"localhost:{self.port}"

  def is_running(self) -> bool:
    return self.process.poll() is None

  def log_tail(self) -> str:
    return _tail(self.log_path)

  def describe_exit(self) -> str:
    """One paragraph on why the worker is gone, for error messages."""
    code = self.process.poll()
    what = ("is still running" if code is None else
            f"exited with status {code}" if code >= 0 else
            f"was killed by signal {-code}")
    tail = self.log_tail()
    return (f"TFF worker pid {self.pid} on port {self.port} {what}" +
            (f"; last log lines:\n{tail}" if tail else ""))

  def send_stop_signal(self) -> None:
    if self.owner_pid == os.getpid() and self.is_running():
      try:
        self.process.send_signal(signal.SIGINT)
      except ProcessLookupError:
        pass

  def stop(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> None:
    """SIGINT, up to `grace_s` seconds to exit, then SIGKILL; idempotent."""
    _unregister(self)
    if self.owner_pid != os.getpid():
      return
    self.send_stop_signal()
    try:
      self.process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
      self.process.kill()
      self.process.wait()
    if self._delete_log and self.log_path:
      try:
        os.remove(self.log_path)
      except OSError:
        pass
      self.log_path = None

  def __enter__(self) -> WorkerProcess:
    return self

  def __exit__(self, *exc_info) -> None:
    self.stop()

  def __repr__(self) -> str:
    return f"WorkerProcess(pid={self.pid}, port={self.port})"


# ---------------------------------------------------------------------------
# Registry of owned workers and the exit paths that stop them.

# Re-entrant: the signal handlers run in the main thread, possibly while the
# main thread itself is inside a locked section.
_LOCK = threading.RLock()
_WORKERS: dict[int, WorkerProcess] = {}
_HOOKS_INSTALLED = False
_SIGNALS_INSTALLED = False
_PREVIOUS_HANDLERS: dict[int, Any] = {}
_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _register(worker: WorkerProcess) -> None:
  with _LOCK:
    _WORKERS[worker.pid] = worker
  _install_exit_hooks()


def _unregister(worker: WorkerProcess) -> None:
  with _LOCK:
    _WORKERS.pop(worker.pid, None)


def owned_workers() -> list[WorkerProcess]:
  """The live workers this process started and has not stopped yet."""
  with _LOCK:
    return [w for w in _WORKERS.values() if w.owner_pid == os.getpid()]


def shutdown_all_workers(grace_s: float = DEFAULT_STOP_GRACE_S) -> None:
  """Stops every worker this process owns: SIGINT to all, then SIGKILL."""
  workers = owned_workers()
  # Signal all first so the grace periods overlap instead of adding up.
  for worker in workers:
    worker.send_stop_signal()
  deadline = time.monotonic() + grace_s
  for worker in workers:
    worker.stop(grace_s=max(0.0, deadline - time.monotonic()))


def _on_signal(signum: int, frame) -> None:
  shutdown_all_workers()
  previous = _PREVIOUS_HANDLERS.get(signum, signal.SIG_DFL)
  if callable(previous):
    # E.g. Python's default SIGINT handler, which raises KeyboardInterrupt.
    previous(signum, frame)
    return
  if previous == signal.SIG_IGN:
    return
  # SIG_DFL (or a handler installed from C): die by the same signal, so the
  # parent sees the conventional status instead of a Python exit code.
  sys.stdout.flush()
  sys.stderr.flush()
  signal.signal(signum, signal.SIG_DFL)
  os.kill(os.getpid(), signum)


def _install_exit_hooks() -> None:
  """Registers atexit once and, from the main thread, the signal handlers."""
  global _HOOKS_INSTALLED, _SIGNALS_INSTALLED
  with _LOCK:
    if not _HOOKS_INSTALLED:
      atexit.register(shutdown_all_workers)
      _HOOKS_INSTALLED = True
    if _SIGNALS_INSTALLED:
      return
    if threading.current_thread() is not threading.main_thread():
      # signal.signal only works in the main thread; atexit and
      # PR_SET_PDEATHSIG still cover this process until a later call from
      # the main thread installs the handlers.
      logging.info("TFF worker started off the main thread: signal handlers "
                   "are not installed yet")
      return
    for signum in _HANDLED_SIGNALS:
      previous = signal.getsignal(signum)
      if previous == signal.SIG_IGN:
        continue  # e.g. nohup: the user asked for this signal to be ignored.
      _PREVIOUS_HANDLERS[signum] = previous
      signal.signal(signum, _on_signal)
    _SIGNALS_INSTALLED = True


# ---------------------------------------------------------------------------
# Starting workers.

def _load_prctl() -> Callable[..., int] | None:
  if not sys.platform.startswith("linux"):
    return None
  try:
    return ctypes.CDLL(None, use_errno=True).prctl
  except (OSError, AttributeError):
    return None


# Resolved before any fork: preexec_fn runs between fork and exec, where
# loading a library (taking the loader lock) could deadlock.
_PRCTL = _load_prctl()


def _child_preexec(parent_pid: int) -> Callable[[], None]:
  """Returns the preexec_fn that ties the worker's life to this process."""

  def preexec() -> None:
    if _PRCTL is not None:
      _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
      # The parent may have died between fork and prctl; then nobody would
      # ever send the death signal.
      if os.getppid() != parent_pid:
        os._exit(1)  # pylint: disable=protected-access
    # A parent started in the background by a non-interactive shell ignores
    # SIGINT, and exec keeps ignored signals ignored: without this the worker
    # would only stop on SIGKILL.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

  return preexec


class _Spawner:
  """Forks workers from the main thread or from one long-lived daemon thread.

  PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not
  the process: a worker started from a short-lived thread (a thread pool)
  would die with that thread. The daemon thread below only ends with the
  process (it is not joined at exit, so atexit still stops the workers
  gently first).
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._queue = None
    self._pid = None

  def _serve(self, requests: queue.SimpleQueue) -> None:
    while True:
      fn, future = requests.get()
      if future.set_running_or_notify_cancel():
        try:
          future.set_result(fn())
        except BaseException as e:  # pylint: disable=broad-except
          future.set_exception(e)

  def run(self, fn: Callable[[], Any]) -> Any:
    if threading.current_thread() is threading.main_thread():
      return fn()
    with self._lock:
      # After a fork the queue is inherited but its thread is not.
      if self._queue is None or self._pid != os.getpid():
        self._queue = queue.SimpleQueue()
        self._pid = os.getpid()
        threading.Thread(target=self._serve, args=(self._queue,),
                         name="fedclf-tff-spawner", daemon=True).start()
      future = concurrent.futures.Future()
      self._queue.put((fn, future))
    return future.result()


_SPAWNER = _Spawner()


def wait_for_channel(channel: grpc.Channel, address: str, timeout_s: float,
                      worker: WorkerProcess | None) -> None:
  ready = grpc.channel_ready_future(channel)
  deadline = time.monotonic() + timeout_s
  try:
    while True:
      # Short waits so a worker that exits (port taken, bad binary) is
      # reported at once instead of after the whole timeout.
      try:
        ready.result(timeout=0.1)
        return
      except grpc.FutureTimeoutError:
        pass
      if worker is not None and not worker.is_running():
        raise WorkerError(f"TFF worker exited before it was ready: "
                          f"{worker.describe_exit()}")
      if time.monotonic() > deadline:
        raise TimeoutError(f"no TFF worker answered at {address} within "
                           f"{timeout_s:g} s")
  finally:
    ready.cancel()


def close_channel(channel: grpc.Channel, timeout_s: float = 1.0) -> None:
  """Closes `channel` once its connectivity callbacks are unsubscribed and
  grpc's polling thread has ended.

  TFF's stub subscribes one callback for the channel's life (and a readiness
  wait another). grpc's own `close()` unsubscribes them too but closes at
  once, so a poll the thread begins after that dies with "Cannot monitor
  channel state: Channel closed!" and prints a traceback (seen when a run
  is stopped while TFF retries a worker). The thread notices within its
  0.2 s poll period. Uses grpc's `_connectivity_state` (grpcio is pinned);
  without it, only a fixed wait."""
  state = getattr(channel, "_connectivity_state", None)
  if state is None:
    time.sleep(0.3)
    channel.close()
    return
  with state.lock:
    callbacks = [callback for callback, _ in
                 state.callbacks_and_connectivities]
  for callback in callbacks:
    channel.unsubscribe(callback)
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    with state.lock:
      if not state.polling:
        break
    time.sleep(0.02)
  channel.close()


def wait_until_ready(address: str, timeout_s: float,
                     worker: WorkerProcess | None = None) -> None:
  """Blocks until a TFF worker accepts gRPC connections at `address`.

  Args:
    address: "host:port".
    timeout_s: Seconds to wait.
    worker: The local process serving `address`, if any: its exit ends the
      wait early with the reason.

  Raises:
    WorkerError: `worker` exited before it was ready.
    TimeoutError: Not ready after `timeout_s` seconds.
  """
  channel = grpc.insecure_channel(address, options=GRPC_CHANNEL_OPTIONS)
  try:
    wait_for_channel(channel, address, timeout_s, worker)
  finally:
    close_channel(channel)


def _localhost_only_environment() -> dict:
  """Makes an owned worker serve on 127.0.0.1 only (it takes no bind
  address and has no authentication); where that cannot be arranged (no C
  compiler for the bind library) it serves everywhere, with a warning."""
  from fedclf.federated import bind_address  # pylint: disable=g-import-not-at-top
  try:
    return bind_address.worker_environment("127.0.0.1")
  except bind_address.BindAddressError as e:
    logging.warning("the TFF worker of this run serves on every interface: "
                    "%s", e)
    return {}


def concurrent_calls(requested: int) -> int:
  """The worker's `--max_concurrent_computation_calls`: `requested`, or for
  0 the CPU cores this process may use (its affinity, e.g. `taskset`'s).

  Without a limit TFF's worker starts every client of a call at once, each
  with its own copy of the model, its optimizer slots and its update: at 20
  McMahan-CNN clients per call 1.0 GiB against 0.8 GiB at one per core,
  for the same round time on 2 cores. Negative: no limit."""
  if requested:
    return requested
  return len(os.sched_getaffinity(0))


def start_local_worker(
    port: int | None = None,
    *,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    max_concurrent_computation_calls: int = 0,
    log_path: str | None = None,
) -> WorkerProcess:
  """Starts `worker_binary` on localhost, owned by (and dying with) us.

  Args:
    port: Port to serve on; None picks a free one.
    ready_timeout_s: Seconds to wait for the worker to accept connections.
    max_concurrent_computation_calls: Passed to the worker (see
      `concurrent_calls`); 0 = one per CPU core this process may use.
    log_path: Where the worker's stdout/stderr go. None: a temporary file,
      deleted when the worker is stopped.

  Returns:
    The running, registered worker. Stop it with `.stop()` (or use it as a
    context manager); otherwise it is stopped at exit.

  Raises:
    WorkerError: The worker did not become ready.
  """
  binary = worker_binary_path()
  env = dict(os.environ, **_localhost_only_environment())
  tries = 1 if port is not None else _PORT_RETRIES
  for attempt in range(tries):
    chosen_port = port if port is not None else portpicker.pick_unused_port()
    delete_log = log_path is None
    if log_path is None:
      fd, path = tempfile.mkstemp(prefix=f"tff_worker_{chosen_port}_",
                                  suffix=".log")
      os.close(fd)
    else:
      path = log_path
    args = [binary, f"--port={chosen_port}",
            f"--max_concurrent_computation_calls="
            f"{concurrent_calls(max_concurrent_computation_calls)}"]

    def spawn(args=args, path=path) -> subprocess.Popen:
      with open(path, "ab") as log:
        # The log file, not our stdout: an inherited pipe would stay open as
        # long as the worker lives, and `... | cat` would never end.
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, close_fds=True, env=env,
            preexec_fn=_child_preexec(os.getpid()))

    with _LOCK:
      # Fork and registration are one step for shutdown_all_workers running
      # in another thread (atexit); a worker forked but not yet registered
      # when this process dies is still covered by PR_SET_PDEATHSIG.
      process = _SPAWNER.run(spawn)
      worker = WorkerProcess(process, chosen_port, path, delete_log)
      _register(worker)
    try:
      wait_until_ready(worker.address, ready_timeout_s, worker)
    except WorkerError as e:
      worker.stop()
      # Most likely someone bound the picked port first: try another one.
      if attempt + 1 < tries and "Address already in use" in str(e):
        logging.info("port %d was taken, retrying", chosen_port)
        continue
      raise
    except TimeoutError as e:
      message = f"{e}: {worker.describe_exit()}"
      worker.stop()
      raise WorkerError(message) from None
    except BaseException:
      worker.stop()
      raise
    logging.info("started TFF worker pid %d on %s (log %s)", worker.pid,
                 worker.address, path)
    return worker
  raise AssertionError("unreachable")
