"""TFF execution contexts on workers that fedclf owns or connects to.

  with TffRuntime() as runtime:          # one local worker, owned
    state = process.initialize()
    ...
  with TffRuntime(workers=["hostA:8000", "hostB:8000"]):   # remote workers
    ...

`TffRuntime` starts (through `tff_workers`, which owns and always stops the
worker processes) or connects to the workers, installs a TFF execution
context running on them as TFF's default, and on exit restores the previous
default, frees its executors and stops the workers it owns.

Several workers: each worker gets its own `AsyncExecutionContext` and they
are combined with TFF's `create_mergeable_comp_execution_context`. That
context compiles a computation to "mergeable comp form" (everything up to the
single aggregation, the merge of partial aggregates, everything after it),
splits the CLIENTS-placed argument into one contiguous slice per worker, runs
`up_to_merge` on the workers in parallel, merges the partial aggregates and
runs `after_merge`. This was checked
(tests/federated/backends/tff_runtime_test.py) on a FedAvg-style round:
`federated_broadcast` of server weights, `federated_map` of a
`tf_computation` over per-client data, and `federated_mean` weighted by the
client example counts, plus parallel unweighted
`federated_mean`/`federated_sum` aggregates; results match the single-worker
context. A `tff.learning.algorithms.build_weighted_fed_avg`
process (Keras model, tf.data client datasets) also runs `initialize` and
`next` through it with the same metrics as one worker. The limit is TFF's:
a computation may contain any number of *parallel* aggregations but no
aggregation that depends on the result of another one in the same call
(e.g. an aggregate that is broadcast back and aggregated again); those raise
a ValueError at compile time, and such computations must be run with a
single worker (`TffRuntime(workers=[one_address])`). One more difference:
a CLIENTS cardinality that cannot be inferred from the arguments
(`default_num_clients`) is split across the workers so the total number of
clients stays the same as with one worker.

`run_on_workers` is the other way to use several workers: one
computation called on each worker at once with that worker's own
arguments (a thread and a sync context per worker), its results returned
to the caller, which combines them itself. The tff backend's slice rounds
(tff_slices.py) use it, so the only bytes on the wire are each worker's
inputs and its one result; the mergeable form also ships the partial
aggregates to a worker for the merge and the state for `after_merge`.

Caveats: TFF's context stack is thread-local, so the context is the default
only in the thread that entered the `TffRuntime`; after the block TFF's own
(leaky) default context is back in effect. Remote workers are not owned: the
runtime frees its executors on them but leaves them running. A remote worker
that stays unreachable for `ready_timeout_s` ends the call with WorkerError
(TFF alone would retry forever).

Bytes on the wire: every request the runtime sends to its workers and every
response it gets back goes through `_CountingStub`, which adds the
protobuf's `ByteSize()` (exactly the gRPC message payload TFF's
`RemoteExecutor` sends; HTTP/2 framing and headers are not counted) to the
runtime's `WireTraffic`.

TFF itself is imported inside the functions that need it, so importing this
module stays cheap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from typing import Sequence
import weakref

from absl import logging
import grpc

from fedclf.errors import UserError
from fedclf.federated.backends.tff_workers import close_channel
from fedclf.federated.backends.tff_workers import DEFAULT_READY_TIMEOUT_S
from fedclf.federated.backends.tff_workers import GRPC_CHANNEL_OPTIONS
from fedclf.federated.backends.tff_workers import start_local_worker
from fedclf.federated.backends.tff_workers import wait_for_channel
from fedclf.federated.backends.tff_workers import wait_until_ready
from fedclf.federated.backends.tff_workers import WorkerError
from fedclf.federated.backends.tff_workers import WorkerProcess


def _parse_workers(workers: Sequence[str] | str) -> list[str]:
  if isinstance(workers, str):  # e.g. straight from a --workers flag
    workers = [w for w in workers.split(",") if w.strip()]
  addresses = []
  for address in workers:
    address = address.strip()
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise UserError(f"bad TFF worker address {address!r}; expected "
                      f"host:port, e.g. localhost:8000")
    addresses.append(address)
  return addresses


@dataclasses.dataclass
class WireTraffic:
  """gRPC payload bytes sent to and received from the workers so far (of
  the sent: those of computations, which TFF sends with every call), and
  how many computations the runtime's contexts compiled."""
  sent: int = 0
  received: int = 0
  computations_sent: int = 0
  compilations: int = 0


# The executor service's unary calls (remote_executor_grpc_stub.py).
_RPC_METHODS = frozenset((
    "get_executor", "create_value", "create_struct", "create_call",
    "create_selection", "compute", "dispose", "dispose_executor"))


class _CountingStub:
  """Delegates to TFF's gRPC stub, counting each request's and response's
  serialized size into `traffic`."""

  def __init__(self, stub, traffic: WireTraffic):
    self._stub = stub
    self._traffic = traffic

  def __getattr__(self, name):
    attr = getattr(self._stub, name)
    if name not in _RPC_METHODS:
      return attr
    traffic = self._traffic

    def counted(request):
      size = request.ByteSize()
      traffic.sent += size
      if (name == "create_value" and
          request.value.WhichOneof("value") == "computation"):
        traffic.computations_sent += size
      response = attr(request)
      traffic.received += response.ByteSize()
      return response

    return counted


def _split_evenly(total: int, parts: int) -> list[int]:
  base, extra = divmod(total, parts)
  return [base + (1 if i < extra else 0) for i in range(parts)]


class _WorkerConnection:
  """A gRPC channel to one worker and the TFF executors created on it."""

  def __init__(self, address: str, default_num_clients: int,
               worker: WorkerProcess | None, ready_timeout_s: float,
               traffic: WireTraffic):
    # pylint: disable=g-import-not-at-top
    from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub
    # pylint: enable=g-import-not-at-top
    self.address = address
    self.default_num_clients = default_num_clients
    self.worker = worker
    self.ready_timeout_s = ready_timeout_s
    self.channel = grpc.insecure_channel(address,
                                         options=GRPC_CHANNEL_OPTIONS)
    self._stub = _CountingStub(
        remote_executor_grpc_stub.RemoteExecutorGrpcStub(self.channel),
        traffic)
    # Weak: TFF's executor cache drops executors it evicts; we only need to
    # close the ones still alive at the end.
    self._executors = weakref.WeakSet()

  def ensure_ready(self) -> None:
    """Raises WorkerError if the worker is dead or stays unreachable.

    TFF's contexts retry gRPC UNAVAILABLE forever, re-creating the executor
    each time; this check runs on each creation, so a dead owned worker (or a
    remote one unreachable for `ready_timeout_s`) ends the retries with an
    error instead of a silent hang.
    """
    if self.worker is not None and not self.worker.is_running():
      raise WorkerError(f"TFF worker died: {self.worker.describe_exit()}")
    if self._stub.is_ready:
      return
    try:
      wait_for_channel(self.channel, self.address, self.ready_timeout_s,
                        self.worker)
    except TimeoutError as e:
      raise WorkerError(f"lost the TFF worker: {e}") from None

  def executor_factory(self):
    """A TFF executor factory whose executors run on this worker."""
    # pylint: disable=g-import-not-at-top
    from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
    from tensorflow_federated.python.core.impl.executors import remote_executor
    from tensorflow_federated.python.core.impl.types import placements
    # pylint: enable=g-import-not-at-top

    def stack_fn(cardinalities):
      self.ensure_ready()
      if cardinalities.get(placements.CLIENTS) is None:
        cardinalities[placements.CLIENTS] = self.default_num_clients
      executor = remote_executor.RemoteExecutor(self._stub)
      executor.set_cardinalities(cardinalities)
      self._executors.add(executor)
      return executor

    return python_executor_stacks.ResourceManagingExecutorFactory(stack_fn)

  @property
  def num_executors(self) -> int:
    return len(self._executors)

  def close(self) -> None:
    # Frees the executors' state on long-lived remote workers; harmless (and
    # quick: calls on a broken channel fail fast) for owned ones.
    for executor in list(self._executors):
      try:
        executor.close()
      except Exception as e:  # pylint: disable=broad-except
        logging.debug("closing executor on %s: %s", self.address, e)
    close_channel(self.channel)


def _own_loop_context(context):
  """`context` (a TFF async context) with its invocations run on an event
  loop of their own.

  TFF's `RemoteExecutor` makes blocking gRPC calls inside its coroutines.
  Contexts that share one event loop, as a mergeable context's do, so take
  turns: the second worker is not even sent its slice until the first has
  computed its own (measured: two pinned workers 0.92x one). On its own
  loop each worker's calls block only that loop."""
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.common_libs import async_utils
  from tensorflow_federated.python.core.impl.context_stack import context_base
  # pylint: enable=g-import-not-at-top

  class OwnLoopContext(context_base.AsyncContext):

    def __init__(self):
      self._async_runner = async_utils.AsyncThreadRunner()

    async def invoke(self, comp, arg):
      return await self._async_runner.await_coro_and_return_result(
          context.invoke(comp, arg))

  return OwnLoopContext()


def _cancel_then_stop(loop) -> None:
  """Cancels the loop's pending tasks, then stops it once they have ended.

  A call in flight when its worker went away (SIGTERM stops the workers
  first) is left retrying by TFF's `retrying` decorator forever; stopping
  the loop under it leaves a pending task, which asyncio reports with its
  traceback when the task is garbage collected at exit."""
  pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
  if not pending:
    loop.stop()
    return
  for task in pending:
    task.cancel()
  asyncio.gather(*pending, return_exceptions=True).add_done_callback(
      lambda _: loop.stop())


def _stop_event_loop(context) -> None:
  """Ends the event-loop thread of TFF's sync or mergeable `context` now.

  TFF's `AsyncThreadRunner` stops its thread when garbage collected, which
  for a context left in TFF's caches is at exit: a process that builds
  contexts run after run (the test suite) piles up threads, and a process
  with many threads is where gRPC's fork handlers hung."""
  context = getattr(context, "wrapped", context)
  runner = getattr(context, "_async_runner", None)
  if runner is None:
    return
  # pylint: disable=protected-access
  loop, thread = runner._event_loop, runner._thread
  # pylint: enable=protected-access
  if thread.is_alive():
    loop.call_soon_threadsafe(_cancel_then_stop, loop)
    thread.join(timeout=10)
  # The runner's own finalizer would stop it again, on a loop that may be
  # closed by then (a RuntimeError printed at exit).
  runner._finalizer = lambda *_: None  # pylint: disable=protected-access


def _context_kwargs(compiler_fn) -> dict:
  """TFF's native-backend arguments of an execution context."""
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
  # pylint: enable=g-import-not-at-top
  return dict(compiler_fn=compiler_fn,
              transform_args=tensorflow_computation.transform_args,
              transform_result=tensorflow_computation.transform_result)


def _explain_split_errors(context, num_workers: int):
  """Wraps a mergeable-comp context to say why a computation cannot split."""
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.context_stack import context_base
  # pylint: enable=g-import-not-at-top

  class ExplainingContext(context_base.SyncContext):
    """Delegates to `context`; rewrites TFF's (multi-page) split error."""

    def __init__(self):
      self.wrapped = context

    def invoke(self, comp, arg):
      try:
        return context.invoke(comp, arg)
      except ValueError as e:
        if "aggregate dependent on another" not in str(e):
          raise
        raise ValueError(
            f"this computation aggregates a value that depends on another "
            f"aggregate of the same call, so it cannot be split across "
            f"{num_workers} TFF workers; run it with one worker") from e

  return ExplainingContext()


class TffRuntime:
  """Installs a TFF execution context backed by fedclf-managed workers.

  Usage:

    with TffRuntime() as runtime:                 # one owned local worker
      result = my_federated_computation(data)

    with TffRuntime(workers=["hostA:8000", "hostB:8000"]):
      ...

  With no `workers` one local worker is started and owned (stopped on exit).
  With `workers` ("host:port" strings, or one comma-separated string) the
  runtime connects to workers that are already running, e.g. started by
  `python -m simulations.tff_worker --port=8000`, and leaves them running.
  Several workers share each computation through TFF's mergeable-comp
  context (see the module docstring for what that can run).
  """

  def __init__(self, workers: Sequence[str] = (), default_num_clients: int = 0,
               *, ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S):
    """Configures the runtime; nothing starts before `__enter__`.

    Args:
      workers: Addresses of running TFF workers; empty starts a local one.
      default_num_clients: CLIENTS cardinality for computations whose
        arguments do not determine it (split across several workers).
      ready_timeout_s: Seconds to wait for each worker to accept connections.

    Raises:
      UserError: A bad address or a negative `default_num_clients`.
    """
    self._addresses = _parse_workers(workers)
    if default_num_clients < 0:
      raise UserError(f"default_num_clients must be >= 0, got "
                      f"{default_num_clients}")
    self._default_num_clients = default_num_clients
    self._ready_timeout_s = ready_timeout_s
    self._owned: list[WorkerProcess] = []
    self._connections: list[_WorkerConnection] = []
    self._context = None
    self._split_contexts = {}
    self._worker_loop_contexts = []
    self._worker_contexts = []
    self._threads = None
    self._previous_context = None
    self._active = False
    self.traffic = WireTraffic()

  @property
  def num_workers(self) -> int:
    return len(self._addresses) or 1

  @property
  def addresses(self) -> list[str]:
    """Worker addresses (known for a local worker only once entered)."""
    if self._owned:
      return [w.address for w in self._owned]
    return list(self._addresses)

  @property
  def owned_pids(self) -> list[int]:
    """Pids of the live workers this runtime started (empty for remote)."""
    return [w.pid for w in self._owned if w.is_running()]

  @property
  def context(self):
    """The installed TFF context (None outside the `with` block)."""
    return self._context

  def __enter__(self) -> TffRuntime:
    if self._active:
      raise RuntimeError("this TffRuntime is already active")
    try:
      self._start()
    except BaseException:
      self._shutdown()
      raise
    self._active = True
    return self

  def __exit__(self, *exc_info) -> None:
    self._active = False
    self._shutdown()

  def _start(self) -> None:
    # pylint: disable=g-import-not-at-top
    from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
    # pylint: enable=g-import-not-at-top
    if self._addresses:
      workers = [None] * len(self._addresses)
      for address in self._addresses:
        try:
          wait_until_ready(address, self._ready_timeout_s)
        except TimeoutError as e:
          raise UserError(f"{e}; start one there with `python -m "
                          f"simulations.tff_worker --port=PORT`") from None
      addresses = self._addresses
    else:
      self._owned = [start_local_worker(
          ready_timeout_s=self._ready_timeout_s)]
      workers = self._owned
      addresses = [w.address for w in self._owned]

    clients = _split_evenly(self._default_num_clients, len(addresses))
    self._connections = [
        _WorkerConnection(address, n, worker, self._ready_timeout_s,
                          self.traffic)
        for address, n, worker in zip(addresses, clients, workers)]
    self._context = self._make_context()
    stack = context_stack_impl.context_stack
    # TFF has no public getter for the default (bottom) context.
    self._previous_context = stack._stack[0]  # pylint: disable=protected-access
    stack.set_default_context(self._context)

  def _compile_counted(self, comp):
    """TFF's native compiler, counting its calls: TFF's CompilerPipeline
    caches by computation, so a count that grows per round means a
    computation is rebuilt per round."""
    # pylint: disable=g-import-not-at-top
    from tensorflow_federated.python.core.backends.native import compiler
    # pylint: enable=g-import-not-at-top
    self.traffic.compilations += 1
    return compiler.desugar_and_transform_to_native(comp)

  def _make_context(self):
    if len(self._connections) == 1:
      return self._sync_context(self._connections[0], self._compile_counted)
    return self.split_context(len(self._connections))

  def split_context(self, num_subrounds: int):
    """A context that splits each call's CLIENTS-placed arguments into
    `num_subrounds` contiguous slices, runs them on the workers (several
    slices per worker one after another) up to the computation's
    aggregation, merges the partial aggregates and runs the rest once: TFF's
    mergeable comp form. A worker then holds one slice's clients at a time,
    not its whole share of the round. Install it around a call with TFF's
    `context_stack_impl.context_stack.install`; cached per
    `num_subrounds`.

    A computation whose result is CLIENTS-placed (not all-equal) has its
    pre-aggregation part rerun for that result after the merge, once per
    slice: such computations should run unsplit."""
    if num_subrounds < len(self._connections):
      raise ValueError(f"num_subrounds {num_subrounds} < workers "
                       f"{len(self._connections)}")
    if num_subrounds in self._split_contexts:
      return self._split_contexts[num_subrounds]
    # pylint: disable=g-import-not-at-top
    from tensorflow_federated.python.core.backends.native import execution_contexts
    from tensorflow_federated.python.core.impl.execution_contexts import async_execution_context
    # pylint: enable=g-import-not-at-top
    kwargs = _context_kwargs(self._compile_counted)
    per_worker = [_own_loop_context(
        async_execution_context.AsyncExecutionContext(
            executor_fn=c.executor_factory(), **kwargs))
                  for c in self._connections]
    self._worker_loop_contexts.extend(per_worker)
    mergeable = execution_contexts.create_mergeable_comp_execution_context(
        per_worker, num_subrounds=num_subrounds)
    context = _explain_split_errors(mergeable, len(self._connections))
    self._split_contexts[num_subrounds] = context
    return context

  def run_on_workers(self, comp, args_by_worker: dict[int, tuple]) -> list:
    """`comp(*args_by_worker[i])` on worker i, for every worker named, all
    at once (one thread each, every worker on its own context and event
    loop); the results in the order of `args_by_worker`. The first error
    raised is re-raised."""
    if not set(args_by_worker) <= set(range(len(self._connections))):
      raise ValueError(f"workers {sorted(args_by_worker)} named, "
                       f"{len(self._connections)} connected")
    if not self._worker_contexts:
      self._worker_contexts = (
          [self._context] if len(self._connections) == 1
          else [self._sync_context(c, self._compile_counted)
                for c in self._connections])
      self._threads = concurrent.futures.ThreadPoolExecutor(
          max_workers=len(self._connections),
          thread_name_prefix="tff_worker_call")

    def call(context, args):
      # pylint: disable=g-import-not-at-top
      from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
      # pylint: enable=g-import-not-at-top
      # TFF's context stack is thread-local.
      with context_stack_impl.context_stack.install(context):
        return comp(*args)

    calls = [self._threads.submit(call, self._worker_contexts[i], args)
             for i, args in args_by_worker.items()]
    return [c.result() for c in calls]

  def _sync_context(self, connection: _WorkerConnection, compiler_fn):
    # pylint: disable=g-import-not-at-top
    from tensorflow_federated.python.core.impl.execution_contexts import sync_execution_context
    # pylint: enable=g-import-not-at-top
    return sync_execution_context.SyncExecutionContext(
        executor_fn=connection.executor_factory(),
        **_context_kwargs(compiler_fn))

  def run_on_worker(self, index: int, comp, *args):
    """`comp(*args)` on worker `index` alone (e.g. a check of what that
    worker holds)."""
    # pylint: disable=g-import-not-at-top
    from tensorflow_federated.python.core.backends.native import compiler
    from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
    # pylint: enable=g-import-not-at-top
    # Not counted among the round's compilations: a check, not the round.
    context = self._sync_context(self._connections[index],
                                 compiler.desugar_and_transform_to_native)
    try:
      with context_stack_impl.context_stack.install(context):
        return comp(*args)
    finally:
      _stop_event_loop(context)

  def _shutdown(self) -> None:
    if self._context is not None:
      # pylint: disable=g-import-not-at-top
      from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
      # pylint: enable=g-import-not-at-top
      stack = context_stack_impl.context_stack
      # Only undo our own change: someone may have installed another default
      # inside the block on purpose.
      if stack._stack[0] is self._context:  # pylint: disable=protected-access
        stack.set_default_context(self._previous_context)
    if self._threads is not None:
      self._threads.shutdown(wait=True)
    for context in {id(c): c for c in [
        self._context, *self._split_contexts.values(),
        *self._worker_loop_contexts, *self._worker_contexts]}.values():
      _stop_event_loop(context)
    for connection in self._connections:
      connection.close()
    for worker in self._owned:
      worker.send_stop_signal()
    for worker in self._owned:
      worker.stop()
    self._connections = []
    self._owned = []
    self._context = None
    self._split_contexts = {}
    self._worker_loop_contexts = []
    self._worker_contexts = []
    self._threads = None
    self._previous_context = None
