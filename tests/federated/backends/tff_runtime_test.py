"""fedclf's own TFF workers: contexts on one and several workers, and no
worker left behind on any exit path.

Importing TFF takes up to ~50 s, so every in-process test shares this module's
import, and the exit-path scripts (each importing TFF itself) run at once.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import portpicker
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fedclf.errors import UserError
from fedclf.federated.backends import tff_context
from fedclf.federated.backends import tff_workers
from tests.worker_launch import launched_worker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
_CONTEXT_STACK = tff.framework.get_context_stack()


def _is_live_worker(pid: int) -> bool:
  """True while `pid` is a running worker_binary (zombies count as gone)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      state = f.read().rsplit(")", 1)[1].split()[0]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      cmdline = f.read()
  except (FileNotFoundError, ProcessLookupError, IndexError):
    return False
  return state not in ("Z", "X") and b"worker_binary" in cmdline


def _wait_gone(pids, timeout_s: float = 10.0):
  """The pids of `pids` still live after up to `timeout_s` seconds."""
  deadline = time.monotonic() + timeout_s
  while True:
    alive = [p for p in pids if _is_live_worker(p)]
    if not alive or time.monotonic() > deadline:
      return alive
    time.sleep(0.1)


@tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
def _total(values):
  return tff.federated_sum(values)


@tff.tensorflow.computation(np.float32)
def _square(x):
  return x * x


@tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
def _mean_square(values):
  return tff.federated_mean(tff.federated_map(_square, values))


@tff.tensorflow.computation(np.float32, np.float32)
def _local_step(weight, x):
  return weight + x


@tff.federated_computation(tff.FederatedType(np.float32, tff.SERVER),
                           tff.FederatedType(np.float32, tff.CLIENTS),
                           tff.FederatedType(np.float32, tff.CLIENTS))
def _fedavg_like(weight, data, num_examples):
  """One FedAvg-shaped round plus parallel aggregates of the same clients."""
  updates = tff.federated_map(_local_step,
                              (tff.federated_broadcast(weight), data))
  return (tff.federated_mean(updates, weight=num_examples),
          tff.federated_mean(data), tff.federated_sum(num_examples))


def test_local_runtime_runs_then_stops_its_worker():
  default_before = _CONTEXT_STACK.current
  with tff_context.TffRuntime() as runtime:
    assert runtime.num_workers == 1
    [pid] = runtime.owned_pids
    assert _is_live_worker(pid)
    assert _total([1, 2, 3]) == 6
    assert _mean_square([1.0, 2.0, 3.0]) == pytest.approx(14 / 3)
    # Its output goes to a log file: an inherited stdout pipe is what made
    # `... | cat` hang with TFF's own context.
    worker_stdout = os.readlink(f"/proc/{pid}/fd/1")
    assert worker_stdout != os.readlink("/proc/self/fd/1")
    assert not worker_stdout.startswith("pipe:")
  assert not _wait_gone([pid])
  assert runtime.owned_pids == []
  assert _CONTEXT_STACK.current is default_before


def test_dead_worker_is_an_error_not_a_hang():
  with tff_context.TffRuntime() as runtime:
    assert _total([1]) == 1
    [pid] = runtime.owned_pids
    os.kill(pid, signal.SIGKILL)
    assert not _wait_gone([pid])
    start = time.monotonic()
    with pytest.raises(tff_workers.WorkerError, match="killed by signal 9"):
      _total([1, 2])
    assert time.monotonic() - start < 30


def test_bad_or_unreachable_worker_addresses():
  with pytest.raises(UserError, match="host:port"):
    tff_context.TffRuntime(workers=["localhost"])
  with pytest.raises(UserError, match="host:port"):
    tff_context.TffRuntime(workers="localhost:0")
  port = portpicker.pick_unused_port()
  with pytest.raises(UserError, match=f"localhost:{port}.*tff_worker"):
    with tff_context.TffRuntime(workers=f"localhost:{port}",
                                ready_timeout_s=1):
      pass


def _keras_fedavg():
  def model_fn():
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.layers.InputLayer((4,)),
                                 tf.keras.layers.Dense(3)])
    return tff.learning.models.from_keras_model(
        model, input_spec=(tf.TensorSpec([None, 4], tf.float32),
                           tf.TensorSpec([None], tf.int32)),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])

  return tff.learning.algorithms.build_weighted_fed_avg(
      model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
      server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0))


def _one_round(process, client_data):
  state = process.initialize()
  output = process.next(state, client_data)
  return (process.get_model_weights(output.state).trainable,
          output.metrics["client_work"]["train"])


@pytest.fixture
def tff_worker_binary():
  """A worker started the way users start remote ones."""
  with launched_worker() as (proc, port, first_line):
    assert f"port {port}" in first_line
    yield proc, f"localhost:{port}"


def test_two_workers_share_each_computation(tff_worker_binary):
  remote, remote_address = tff_worker_binary
  # The launcher execs the worker: its pid is the worker's.
  assert _is_live_worker(remote.pid)
  rng = np.random.default_rng(0)
  client_data = [
      tf.data.Dataset.from_tensor_slices(
          (rng.normal(size=(4 + 4 * i, 4)).astype(np.float32),
           rng.integers(0, 3, size=4 + 4 * i).astype(np.int32))).batch(4)
      for i in range(4)]
  process = _keras_fedavg()
  with tff_workers.start_local_worker() as local:
    with tff_context.TffRuntime(workers=[local.address]):
      weights_one, metrics_one = _one_round(process, client_data)

    with tff_context.TffRuntime(
        workers=[remote_address, local.address]) as runtime:
      assert runtime.num_workers == 2 and runtime.owned_pids == []
      assert _total([1, 2, 3, 4]) == 10
      mean, plain_mean, count = _fedavg_like(1.0, [1.0, 2.0, 3.0, 4.0],
                                             [1.0, 1.0, 2.0, 4.0])
      assert (mean, plain_mean, count) == pytest.approx((4.125, 2.5, 8.0))
      weights_two, metrics_two = _one_round(process, client_data)
      # Both workers ran part of the work.
      assert all(c.num_executors > 0 for c in runtime._connections)  # pylint: disable=protected-access
    assert local.is_running() and remote.poll() is None  # not owned: kept

  assert metrics_two["num_examples"] == metrics_one["num_examples"] == 40
  assert metrics_two["loss"] == pytest.approx(metrics_one["loss"], rel=1e-5)
  for a, b in zip(weights_two, weights_one):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert not _wait_gone([local.pid])


@tff.tensorflow.computation(np.float32, np.float32)
def _squared_error(x, mean):
  return (x - mean) * (x - mean)


def test_dependent_aggregates_need_one_worker():
  @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
  def variance(values):
    mean = tff.federated_broadcast(tff.federated_mean(values))
    return tff.federated_mean(tff.federated_map(_squared_error,
                                                (values, mean)))

  with tff_workers.start_local_worker() as a, \
      tff_workers.start_local_worker() as b:
    with tff_context.TffRuntime(workers=[a.address, b.address]):
      with pytest.raises(ValueError, match="run it with one worker"):
        variance([1.0, 2.0, 3.0, 4.0])
    with tff_context.TffRuntime(workers=[a.address]):
      assert variance([1.0, 2.0, 3.0, 4.0]) == pytest.approx(1.25)


@pytest.mark.parametrize("args,message", [
    ([], "--port must have a value"),
    (["--port=0"], "not an integer in the range [1, 65535]"),
    (["--port=x"], "--port=x"),
])
def test_tff_worker_bad_flags(args, message):
  proc = subprocess.run(
      [sys.executable, "-m", "simulations.tff_worker", *args], cwd=ROOT,
      capture_output=True, text=True, timeout=60)
  assert proc.returncode == 2
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert message in proc.stderr and "Traceback" not in proc.stderr


_EXIT_SCRIPT = textwrap.dedent("""\
    import os, signal, sys, time
    import numpy as np
    import tensorflow_federated as tff
    from fedclf.federated.backends import tff_context

    @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
    def total(values):
      return tff.federated_sum(values)

    mode = sys.argv[1]
    if mode == "normal":
      # Entered and never exited: only the atexit hook can stop this one.
      forgotten = tff_context.TffRuntime().__enter__()
      print("pids", *forgotten.owned_pids, flush=True)
    with tff_context.TffRuntime() as runtime:
      assert total([1, 2, 3]) == 6
      print("pids", *runtime.owned_pids, flush=True)
      if mode == "exception":
        raise RuntimeError("boom")
      if mode.startswith("SIG"):
        os.kill(os.getpid(), getattr(signal, mode))
        time.sleep(60)
    print("clean exit", flush=True)
    """)

# mode -> exit status: Python dies by an uncaught KeyboardInterrupt's SIGINT,
# the SIGTERM handler re-raises SIGTERM, SIGKILL is for PR_SET_PDEATHSIG.
_EXIT_MODES = {"normal": 0, "exception": 1, "SIGINT": -signal.SIGINT,
               "SIGTERM": -signal.SIGTERM, "SIGKILL": -signal.SIGKILL}


def test_no_worker_outlives_its_parent_on_any_exit_path(tmp_path):
  script = tmp_path / "exit_paths.py"
  script.write_text(_EXIT_SCRIPT)
  # TMPDIR: the SIGKILL case cannot delete its worker's log file.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT,
             TMPDIR=str(tmp_path))
  runs = {}
  for mode in _EXIT_MODES:
    # `python exit_paths.py MODE | cat`: cat ends only once every process
    # holding the pipe (the script and anything it leaked) has exited.
    stderr = open(tmp_path / f"{mode}.err", "wb")
    py = subprocess.Popen([sys.executable, str(script), mode], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=stderr)
    cat = subprocess.Popen(["cat"], stdin=py.stdout, stdout=subprocess.PIPE)
    py.stdout.close()
    stderr.close()
    runs[mode] = (py, cat)

  pids = []
  try:
    for mode, (py, cat) in runs.items():
      out, _ = cat.communicate(timeout=400)
      err = (tmp_path / f"{mode}.err").read_text()[-3000:]
      assert py.wait(timeout=30) == _EXIT_MODES[mode], (mode, err)
      lines = out.decode().splitlines()
      mode_pids = [int(p) for l in lines if l.startswith("pids ")
                   for p in l.split()[1:]]
      assert len(mode_pids) == (2 if mode == "normal" else 1), (mode, lines)
      assert ("clean exit" in lines) == (mode == "normal"), (mode, lines)
      pids += mode_pids
      assert not _wait_gone(mode_pids), (mode, err)
  finally:
    for py, cat in runs.values():
      for proc in (py, cat):
        if proc.poll() is None:
          proc.kill()
          proc.wait()
    for pid in pids:
      if _is_live_worker(pid):
        os.kill(pid, signal.SIGKILL)


def test_worker_runs_one_call_per_core_unless_told(monkeypatch):
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5})
  assert tff_workers.concurrent_calls(0) == 3  # its (taskset) cores
  assert tff_workers.concurrent_calls(8) == 8
  assert tff_workers.concurrent_calls(-1) == -1  # no limit


def test_split_context_runs_slices_on_every_worker_and_stops_its_threads():
  import threading  # pylint: disable=g-import-not-at-top
  workers = [tff_workers.start_local_worker() for _ in range(2)]
  try:
    before = threading.active_count()

    @tff.tensorflow.computation(np.float32)
    def double(x):
      return x * 2.0

    @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
    def total(xs):
      return tff.federated_sum(tff.federated_map(double, xs))

    with tff_context.TffRuntime(workers=[w.address for w in workers]) as rt:
      split = rt.split_context(4)  # 2 slices per worker
      assert rt.split_context(4) is split
      with pytest.raises(ValueError):
        rt.split_context(1)
      from tensorflow_federated.python.core.impl.context_stack import context_stack_impl  # pylint: disable=g-import-not-at-top
      with context_stack_impl.context_stack.install(split):
        assert total([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) == 72.0
    assert threading.active_count() <= before
  finally:
    for w in workers:
      w.stop()


def test_stopping_a_context_cancels_the_calls_it_left_retrying():
  # A call in flight when its worker went away (SIGTERM stops the workers
  # first) retries forever in TFF's `retrying` decorator; stopping the loop
  # under it left a pending task that asyncio printed with its traceback
  # at exit.
  import asyncio  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.common_libs import async_utils  # pylint: disable=g-import-not-at-top

  class Context:
    _async_runner = async_utils.AsyncThreadRunner()

  async def retrying_forever():
    while True:
      await asyncio.sleep(0.01)

  loop = Context._async_runner._event_loop  # pylint: disable=protected-access
  call = asyncio.run_coroutine_threadsafe(retrying_forever(), loop)
  time.sleep(0.1)
  tff_context._stop_event_loop(Context())  # pylint: disable=protected-access
  assert call.cancelled()
  assert not asyncio.all_tasks(loop)
  assert not loop.is_running()


def test_close_channel_first_stops_its_connectivity_polling():
  # TFF's stub keeps a connectivity callback subscribed for the channel's
  # life; closing the channel while grpc's thread still polls it printed a
  # "Channel closed!" traceback from that thread.
  import grpc  # pylint: disable=g-import-not-at-top
  port = portpicker.pick_unused_port()
  channel = grpc.insecure_channel(f"localhost:{port}")
  seen = []
  channel.subscribe(seen.append, try_to_connect=True)
  deadline = time.monotonic() + 5
  while not seen and time.monotonic() < deadline:
    time.sleep(0.01)
  state = channel._connectivity_state  # pylint: disable=protected-access
  assert state.polling
  tff_workers.close_channel(channel)
  assert not state.polling
  assert not state.callbacks_and_connectivities
