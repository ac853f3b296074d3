"""The measurements behind `benchmarks.federation_bench`, one per figure.

Every public `measure_*` function takes explicit arguments, returns a plain
dict and is meant to run in a fresh interpreter (`in_fresh_process`): its
memory figures then belong to that measurement alone, and TensorFlow
Federated (a ~50 s import, and a worker process) is loaded only where it is
measured. Within one measurement the quantities compared in a ratio are
timed alternately, back to back, several times; the headline ratio uses the
fastest repeat of each side (the one least disturbed by other load on a
shared machine) and the median ratio is reported beside it.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_BATCH_SIZE = 10
CLIENT_LR = 0.05


# -- process plumbing ----------------------------------------------------

def in_fresh_process(fn: Callable[..., Dict], *args) -> Dict:
  """Runs `fn(*args)` in a new interpreter (spawned) and returns its dict."""
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
    return pool.submit(fn, *args).result()


def rss_parts_mib() -> Tuple[float, float]:
  """Resident memory of this process, and of all its children (workers)."""
  import psutil  # pylint: disable=g-import-not-at-top
  proc = psutil.Process()
  children = 0
  for child in proc.children(recursive=True):
    try:
      children += child.memory_info().rss
    except psutil.Error:
      pass
  return proc.memory_info().rss / 2**20, children / 2**20


def rss_mib() -> float:
  """Resident memory of this process and all its children (TFF workers)."""
  return sum(rss_parts_mib())


class PeakMemory:
  """Samples `rss_mib()` in a thread while the `with` block runs."""

  def __init__(self, period_s: float = 0.05):
    self.period_s = period_s
    self.peak = 0.0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._sample, daemon=True)

  def _sample(self) -> None:
    while not self._stop.is_set():
      self.peak = max(self.peak, rss_mib())
      self._stop.wait(self.period_s)

  def __enter__(self) -> "PeakMemory":
    self._thread.start()
    return self

  def __exit__(self, *exc_info) -> None:
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, rss_mib())


def best_and_median_ratio(numerators: Sequence[float],
                          denominators: Sequence[float]) -> Tuple[float, float]:
  """(best/best, median of per-repeat ratios) of two rate series."""
  per_repeat = [n / d for n, d in zip(numerators, denominators)]
  return max(numerators) / max(denominators), float(np.median(per_repeat))


# -- building runs ---------------------------------------------------------

def make_simulation(num_clients: int, clients_per_round: int,
                    examples_per_client: int, backend: str, model: str,
                    partitioner: str = "iid", workers: Sequence[str] = (),
                    test_limit: int = 1000, parallel_clients: int = 0,
                    local_batch_size: int = LOCAL_BATCH_SIZE,
                    client_batching: str = "auto"):
  """A FedAvg simulation on MNIST: B=10 (unless given), E=1, client lr
  0.05."""
  # pylint: disable=g-import-not-at-top
  from fedclf.data import DataConfig
  from fedclf.federated import AlgorithmConfig, FederatedRunConfig
  from fedclf.federated import Simulation, SimulationConfig
  from fedclf.partition import PartitionConfig
  # pylint: enable=g-import-not-at-top
  config = FederatedRunConfig(
      data=DataConfig(name="mnist",
                      train_limit=min(60000, num_clients * examples_per_client),
                      test_limit=test_limit),
      partitioner=partitioner,
      partition=PartitionConfig(num_clients=num_clients, seed=0),
      model_name=model,
      simulation=SimulationConfig(
          algorithm="fedavg",
          algorithm_config=AlgorithmConfig(client_lr=CLIENT_LR,
                                           local_epochs=1,
                                           local_batch_size=local_batch_size),
          num_clients=num_clients, clients_per_round=clients_per_round,
          rounds=1, per_client_eval=0, checkpoint_every=0, backend=backend,
          parallel_clients=parallel_clients, client_batching=client_batching,
          tff_workers=tuple(workers), seed=0))
  return Simulation(config, tempfile.mkdtemp(prefix="fedclf_bench_"), {})


def timed_round(sim, state, round_num: int):
  """(seconds, examples trained, new state) of one round."""
  t0 = time.perf_counter()
  state, row = sim.rounds.train_round(state, {}, round_num)
  return time.perf_counter() - t0, row.get("examples", 0.0), state


def seconds_per_round(sim, repeats: int) -> List[float]:
  """Seconds of each of `repeats` rounds after a first (tracing) one."""
  state = sim.rounds.initial_state()
  _, _, state = timed_round(sim, state, 1)
  times = []
  for r in range(2, 2 + repeats):
    seconds, _, state = timed_round(sim, state, r)
    times.append(seconds)
  return times


class KerasFit:
  """Centralized Keras `fit` on the same examples, in the same process."""

  def __init__(self, model_name: str, x: np.ndarray, y: np.ndarray,
               batch_size: int):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from fedclf.models import build_classifier  # pylint: disable=g-import-not-at-top
    self.x, self.y, self.batch_size = x, y, batch_size
    self.model = build_classifier(model_name, x.shape[1:], 10)
    self.model.compile(tf.keras.optimizers.SGD(CLIENT_LR),
                       tf.keras.losses.SparseCategoricalCrossentropy(
                           from_logits=True))
    # Traces the train function outside the timed calls.
    self.model.fit(x[:batch_size * 20], y[:batch_size * 20],
                   batch_size=batch_size, epochs=1, verbose=0)

  def seconds(self) -> float:
    t0 = time.perf_counter()
    self.model.fit(self.x, self.y, batch_size=self.batch_size, epochs=1,
                   verbose=0, shuffle=False)
    return time.perf_counter() - t0


class SingleGraph:
  """One model's SGD epoch over the examples at a large batch, as one
  compiled graph (a while loop over the batches of data held in memory):
  the throughput the hardware gives a model without federation's small
  batches, and without Keras `fit`'s per-epoch overhead."""

  def __init__(self, model_name: str, x: np.ndarray, y: np.ndarray,
               batch_size: int):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from fedclf.models import build_classifier  # pylint: disable=g-import-not-at-top
    model = build_classifier(model_name, x.shape[1:], 10)
    steps = len(x) // batch_size
    self.examples = steps * batch_size
    images = tf.constant(x[:self.examples])
    labels = tf.constant(y[:self.examples].astype(np.int64))

    @tf.function
    def epoch():
      for i in tf.range(steps):
        batch = tf.range(i * batch_size, (i + 1) * batch_size)
        with tf.GradientTape() as tape:
          loss = tf.reduce_mean(
              tf.keras.losses.sparse_categorical_crossentropy(
                  tf.gather(labels, batch),
                  model(tf.gather(images, batch), training=True),
                  from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g in zip(model.trainable_variables, grads):
          v.assign_sub(CLIENT_LR * g)

    self.epoch = epoch
    epoch()  # traces it outside the timed calls

  def rate(self) -> float:
    """Examples/s of one epoch."""
    t0 = time.perf_counter()
    self.epoch()
    return self.examples / (time.perf_counter() - t0)


# -- 1. federation efficiency -------------------------------------------------

def measure_efficiency(backend: str, clients: int, examples_per_client: int,
                       model: str, repeats: int) -> Dict:
  """Examples/s of one FedAvg round (every client sampled) over Keras fit
  on the same examples, alternating; peak memory during the rounds."""
  sim = make_simulation(clients, clients, examples_per_client, backend, model)
  state = sim.rounds.initial_state()
  _, _, state = timed_round(sim, state, 1)  # traces the client graph
  fit = KerasFit(model, sim.objective.client_inputs(), sim.ds.y_train, LOCAL_BATCH_SIZE)
  round_rates, fit_rates = [], []
  with PeakMemory() as memory:
    for r in range(2, 2 + repeats):
      # Alternating which side goes first spreads slow drifts in the
      # machine's load over both.
      if r % 2:
        fit_rates.append(len(sim.ds.y_train) / fit.seconds())
      seconds, examples, state = timed_round(sim, state, r)
      round_rates.append(examples / seconds)
      if not r % 2:
        fit_rates.append(len(sim.ds.y_train) / fit.seconds())
  sim.close()
  best, median = best_and_median_ratio(round_rates, fit_rates)
  return {"backend": backend, "clients": clients,
          "examples_per_client": examples_per_client,
          "round_rates": round_rates, "fit_rates": fit_rates,
          "efficiency": best, "median_efficiency": median,
          "peak_rss_mib": memory.peak}


# -- 7. batched clients -------------------------------------------------------

def measure_client_batching(model: str, clients: int,
                            examples_per_client: int, batch_size: int,
                            repeats: int) -> Dict:
  """Examples/s of a FedAvg round (every client sampled, B=`batch_size`)
  with the clients batched and in replicas, and of one model's SGD at batch
  256 on the same examples in one graph (`SingleGraph`), alternating."""
  sims = {mode: make_simulation(clients, clients, examples_per_client,
                                "local", model, local_batch_size=batch_size,
                                client_batching=mode)
          for mode in ("on", "off")}
  states = {}
  for mode, sim in sims.items():
    _, _, states[mode] = timed_round(sim, sim.rounds.initial_state(), 1)
  sim = sims["on"]
  single = SingleGraph(model, sim.objective.client_inputs(), sim.ds.y_train,
                       256)
  rates: Dict[str, List[float]] = {"on": [], "off": [], "fit": []}
  for r in range(2, 2 + repeats):
    rates["fit"].append(single.rate())
    for mode in (("on", "off") if r % 2 else ("off", "on")):
      seconds, examples, states[mode] = timed_round(sims[mode], states[mode],
                                                     r)
      rates[mode].append(examples / seconds)
  for s in sims.values():
    s.close()
  ratios = {mode: best_and_median_ratio(rates[mode], rates["fit"])
            for mode in ("on", "off")}
  return {"rates": rates, "ratios": ratios}


# -- 2. against a plain tff.learning loop -------------------------------------

class PlainTffLoop:
  """What a TFF tutorial user writes: `build_weighted_fed_avg` over one
  tf.data dataset per client, Keras model, SGD on clients and server."""

  def __init__(self, model_name: str, x: np.ndarray, y: np.ndarray,
               clients: int, examples_per_client: int):
    # pylint: disable=g-import-not-at-top
    import tensorflow as tf
    import tensorflow_federated as tff
    from fedclf.models import build_classifier
    # pylint: enable=g-import-not-at-top
    spec = (tf.TensorSpec([None] + list(x.shape[1:]), tf.float32),
            tf.TensorSpec([None], tf.int64))

    def model_fn():
      return tff.learning.models.from_keras_model(
          build_classifier(model_name, x.shape[1:], 10), input_spec=spec,
          loss=tf.keras.losses.SparseCategoricalCrossentropy(
              from_logits=True))

    n = examples_per_client
    self.data = [tf.data.Dataset.from_tensor_slices(
        (x[i * n:(i + 1) * n], y[i * n:(i + 1) * n].astype(np.int64))
    ).batch(LOCAL_BATCH_SIZE) for i in range(clients)]
    self.examples = clients * n
    self.process = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(CLIENT_LR),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0))
    self.state = self.process.initialize()

  def seconds(self) -> float:
    t0 = time.perf_counter()
    self.state = self.process.next(self.state, self.data).state
    return time.perf_counter() - t0


def measure_against_plain_tff(clients: int, examples_per_client: int,
                              model: str, repeats: int) -> Dict:
  """fedclf's local backend against the plain TFF loop, same rounds (every
  client of the round trains `examples_per_client` examples, B=10),
  alternating. The plain loop runs on TFF's C++ worker, started and
  stopped by fedclf (TFF's default context would leak it)."""
  from fedclf.federated.backends.tff_context import TffRuntime  # pylint: disable=g-import-not-at-top
  sim = make_simulation(clients, clients, examples_per_client, "local", model)
  state = sim.rounds.initial_state()
  _, _, state = timed_round(sim, state, 1)
  ours, plain_rates = [], []
  with TffRuntime():
    plain = PlainTffLoop(model, sim.objective.client_inputs(), sim.ds.y_train, clients,
                         examples_per_client)
    plain.seconds()  # warm-up: compiles and traces
    for r in range(2, 2 + repeats):
      if r % 2:  # alternating order, as in measure_efficiency
        plain_rates.append(plain.examples / plain.seconds())
      seconds, examples, state = timed_round(sim, state, r)
      ours.append(examples / seconds)
      if not r % 2:
        plain_rates.append(plain.examples / plain.seconds())
  best, median = best_and_median_ratio(ours, plain_rates)
  return {"clients": clients, "examples_per_client": examples_per_client,
          "local_rates": ours, "plain_tff_rates": plain_rates,
          "speedup": best, "median_speedup": median}


# -- 3. memory over rounds ----------------------------------------------------

def measure_memory_over_rounds(backend: str, rounds: int, num_clients: int,
                               clients_per_round: int,
                               examples_per_client: int, model: str,
                               eval_every: int) -> Dict:
  """Resident memory (process, children) after each `eval_every` rounds
  of train + evaluate, up to `rounds`."""
  sim = make_simulation(num_clients, clients_per_round, examples_per_client,
                        backend, model)
  state = sim.rounds.initial_state()
  series: Dict[int, Tuple[float, float]] = {}
  t0 = time.perf_counter()
  for r in range(1, rounds + 1):
    state, _ = sim.rounds.train_round(state, {}, r)
    if r % eval_every == 0:
      sim.evaluator.evaluate(state, r)
      series[r] = rss_parts_mib()
  seconds = time.perf_counter() - t0
  sim.close()
  return {"backend": backend, "rss_parts_mib_by_round": series,
          "seconds_per_round": seconds / rounds}


# -- 4. scale -----------------------------------------------------------------

def measure_scale(num_clients: int, clients_per_round: int, rounds: int,
                  model: str) -> Dict:
  """Seconds per round and peak memory of a Dirichlet(0.5) MNIST split
  (all 60,000 training images) across `num_clients` clients."""
  # Imported first, so that setup time is the run's own (data, partition,
  # graph), not TensorFlow's import.
  import fedclf.federated  # pylint: disable=g-import-not-at-top,unused-import
  base = rss_mib()
  with PeakMemory() as memory:
    t0 = time.perf_counter()
    sim = make_simulation(num_clients, clients_per_round,
                          60000 // num_clients + 1, "local", model,
                          partitioner="dirichlet")
    setup = time.perf_counter() - t0
    times = seconds_per_round(sim, rounds)
  sizes = [len(c) for c in sim.clients]
  return {"num_clients": num_clients, "clients_per_round": clients_per_round,
          "setup_seconds": setup, "seconds_per_round": float(np.median(times)),
          "peak_rss_mib": memory.peak, "rss_before_mib": base,
          "client_sizes": (min(sizes), float(np.median(sizes)), max(sizes)),
          "batch_shape": sim.rounds.batch_shape}


# -- 5. scale-out ---------------------------------------------------------------

def start_worker_binary(port: int) -> subprocess.Popen:
  """`python -m simulations.tff_worker --port=N`, as a user starts one."""
  return subprocess.Popen(
      [sys.executable, "-m", "simulations.tff_worker", f"--port={port}"],
      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def measure_scale_out(clients: int, examples_per_client: int, model: str,
                      repeats: int) -> Dict:
  """Seconds per round: local backend, tff with its one owned worker, tff
  over two workers started with simulations.tff_worker on localhost."""
  # pylint: disable=g-import-not-at-top
  import portpicker
  from fedclf.federated.backends import tff_workers
  # pylint: enable=g-import-not-at-top
  ports = [portpicker.pick_unused_port() for _ in range(2)]
  workers = [start_worker_binary(port) for port in ports]
  addresses = [f"localhost:{port}" for port in ports]
  results = {}
  try:
    for address in addresses:
      tff_workers.wait_until_ready(address, timeout_s=300)
    for label, backend, remote in (
        ("local backend (one process)", "local", ()),
        ("tff backend, one owned worker", "tff", ()),
        ("tff backend, two workers on localhost", "tff", addresses)):
      sim = make_simulation(clients, clients, examples_per_client, backend,
                            model, workers=remote)
      results[label] = min(seconds_per_round(sim, repeats))
      sim.close()
  finally:
    for worker in workers:
      worker.send_signal(signal.SIGINT)
    for worker in workers:
      try:
        worker.wait(timeout=10)
      except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
  return {"seconds_per_round": results, "clients": clients,
          "examples_per_client": examples_per_client}


# -- 6. where a round's time goes ---------------------------------------------

def measure_breakdown(num_clients: int, clients_per_round: int,
                      examples_per_client: int, model: str,
                      rounds: int) -> Dict:
  """Per-round seconds of the local backend's parts (McMahan's setting)."""
  # pylint: disable=g-import-not-at-top
  from fedclf.federated import rounds as rounds_lib
  from fedclf.federated.backends.local import WeightedSums
  # pylint: enable=g-import-not-at-top
  sim = make_simulation(num_clients, clients_per_round, examples_per_client,
                        "local", model, test_limit=0)
  backend = sim.backend
  state = sim.rounds.initial_state()
  t0 = time.perf_counter()
  state, _ = sim.rounds.train_round(state, {}, 1)
  first = time.perf_counter() - t0
  graph_seconds: List[float] = []
  # The backend calls one of two compiled group graphs (per-client outputs,
  # or updates summed inside the graph when it streams); time whichever.
  names = ("_train_group", "_train_group_summed")
  traced = {name: getattr(backend, name) for name in names}

  def timed(graph):
    def call(*args):
      start = time.perf_counter()
      out = graph(*args)
      graph_seconds.append(time.perf_counter() - start)
      return out
    return call

  for name, graph in traced.items():
    setattr(backend, name, timed(graph))
  parts: Dict[str, List[float]] = {
      "data pipeline (sampling, batch index matrices)": [],
      "client training (the compiled client graph)": [],
      "client training: Python around the graph calls (inputs, outputs, "
      "adding each group's weighted sum of updates)": [],
      "aggregation (the mean of the sums) + server update": [],
      "evaluation (10,000 test images)": []}
  keys = list(parts)
  sim_cfg = sim.sim
  for r in range(2, 2 + rounds):
    t0 = time.perf_counter()
    plan = rounds_lib.plan_round(sim_cfg.seed, r, sim_cfg.num_clients,
                                 sim_cfg.clients_per_round, 0.0, 0.0)
    tasks = sim.rounds._tasks(plan, r)  # pylint: disable=protected-access
    t1 = time.perf_counter()
    del graph_seconds[:]
    sums = WeightedSums() if backend.streams else None
    outputs = backend.train_clients(state, tasks, {}, r, sums)
    t2 = time.perf_counter()
    state = backend.aggregate(state, outputs, r, sums)
    t3 = time.perf_counter()
    sim.evaluator.evaluate(state, r)
    t4 = time.perf_counter()
    graph = sum(graph_seconds)
    for key, value in zip(keys, (t1 - t0, graph, t2 - t1 - graph, t3 - t2,
                                 t4 - t3)):
      parts[key].append(value)
  for name, graph in traced.items():
    setattr(backend, name, graph)
  return {"first_round_seconds": first,
          "parts": {k: float(np.median(v)) for k, v in parts.items()}}


def load_average() -> Optional[Tuple[float, float, float]]:
  try:
    return os.getloadavg()
  except OSError:
    return None
