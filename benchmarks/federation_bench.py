r"""Federation benchmarks: writes results/benchmarks.md (not part of tests).

  python -m benchmarks.federation_bench [--quick] [--items=1,2,3,4,5,6]
  make bench

Each figure is a ratio measured within one run on one machine, so noise
from other load cancels as far as possible:
  1. federation efficiency: examples/s of one FedAvg round over those of
     Keras `model.fit` on the same examples (McMahan CNN, MNIST, B=10),
     10 x 600 and 100 x 60 clients, local and tff backends;
  2. speed-up over a plain tff.learning `build_weighted_fed_avg` loop at
     10, 100 and 500 clients per round;
  3. resident memory (process + children) after round 10 and a later round;
  4. scale: 10,000 Dirichlet clients, 100 per round: s/round, peak memory;
  5. scale-out: the same FedAvg rounds on two local TFF workers;
  6. a per-round time breakdown.
"""

import dataclasses
import os
import platform
import tempfile
import time
from typing import Dict, List

from absl import flags

from fedclf import cli

cli.define_common_flags()
flags.DEFINE_bool("quick", False, "Smaller settings (a smoke run).")
flags.DEFINE_list("items", ["1", "2", "3", "4", "5", "6"],
                  "Which figures to measure.")
flags.DEFINE_string("out", "results/benchmarks.md", "Markdown output.")
flags.DEFINE_string("model", "cnn", "Zoo model.")

FLAGS = flags.FLAGS


def rss_mb() -> float:
  """Resident memory of this process and its children (TFF workers)."""
  import psutil  # pylint: disable=g-import-not-at-top
  proc = psutil.Process()
  total = proc.memory_info().rss
  for child in proc.children(recursive=True):
    try:
      total += child.memory_info().rss
    except psutil.Error:
      pass
  return total / 2**20


def make_simulation(num_clients: int, per_round: int, per_client: int,
                    backend: str, model: str, partitioner: str = "iid",
                    workers=(), rounds: int = 1):
  # pylint: disable=g-import-not-at-top
  from fedclf.data import DataConfig
  from fedclf.federated import AlgorithmConfig, FederatedRunConfig
  from fedclf.federated import Simulation, SimulationConfig
  from fedclf.partition import PartitionConfig
  # pylint: enable=g-import-not-at-top
  config = FederatedRunConfig(
      data=DataConfig(name="mnist",
                      train_limit=min(60000, num_clients * per_client),
                      test_limit=1000),
      partitioner=partitioner,
      partition=PartitionConfig(num_clients=num_clients, seed=0,
                                dirichlet_alpha=0.5),
      model_name=model,
      simulation=SimulationConfig(
          algorithm="fedavg",
          algorithm_config=AlgorithmConfig(client_lr=0.05, local_epochs=1,
                                           local_batch_size=10),
          num_clients=num_clients, clients_per_round=per_round,
          rounds=rounds, per_client_eval=0, checkpoint_every=0,
          backend=backend, tff_workers=tuple(workers), seed=0))
  return Simulation(config, tempfile.mkdtemp(prefix="fedclf_bench_"), {})


def time_rounds(sim, rounds: int, start: int = 1):
  """Seconds per round (after a warm-up round) and examples per round."""
  state = sim.backend.initial_state(sim.eval_model)
  client_states = {}
  state, row = sim.train_round(state, client_states, start)  # warm-up/trace
  t0 = time.time()
  examples = 0.0
  for r in range(start + 1, start + 1 + rounds):
    state, row = sim.train_round(state, client_states, r)
    examples += row.get("examples", 0.0)
  seconds = (time.time() - t0) / rounds
  return seconds, examples / rounds, state


def keras_fit_rate(model_name: str, x, y, batch: int) -> float:
  """Examples/s of Keras fit on the same examples (after a warm-up)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fedclf.models import build_classifier  # pylint: disable=g-import-not-at-top
  model = build_classifier(model_name, x.shape[1:], 10)
  model.compile(tf.keras.optimizers.SGD(0.05),
                tf.keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  model.fit(x[:batch * 20], y[:batch * 20], batch_size=batch, epochs=1,
            verbose=0)
  t0 = time.time()
  model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
  return len(y) / (time.time() - t0)


def plain_tff_rate(model_name: str, x, y, clients: int, per_client: int,
                   batch: int, rounds: int) -> float:
  """Examples/s of what a TFF tutorial user writes: build_weighted_fed_avg
  over per-client tf.data datasets, on TFF's default local runtime."""
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  import tensorflow_federated as tff
  from fedclf.models import build_classifier
  from fedclf.federated.tff_runtime import TffRuntime
  # pylint: enable=g-import-not-at-top
  spec = (tf.TensorSpec([None] + list(x.shape[1:]), tf.float32),
          tf.TensorSpec([None], tf.int64))

  def model_fn():
    return tff.learning.models.from_keras_model(
        build_classifier(model_name, x.shape[1:], 10), input_spec=spec,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))

  data = [tf.data.Dataset.from_tensor_slices(
      (x[i * per_client:(i + 1) * per_client],
       y[i * per_client:(i + 1) * per_client].astype("int64"))).batch(batch)
          for i in range(clients)]
  with TffRuntime():
    process = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(
            0.05))
    state = process.initialize()
    state = process.next(state, data).state  # warm-up
    t0 = time.time()
    for _ in range(rounds):
      state = process.next(state, data).state
    return rounds * clients * per_client / (time.time() - t0)


def main(argv):
  del argv
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fedclf.results.record import environment_info  # pylint: disable=g-import-not-at-top
  items = set(FLAGS.items)
  quick = FLAGS.quick
  rounds = 1 if quick else 3
  lines: List[str] = []
  env = environment_info()
  lines += ["# fedclf benchmarks", "",
            f"Machine: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, GPU: "
            f"{bool(tf.config.list_physical_devices('GPU'))}; "
            f"versions: {env.get('versions')}; commit "
            f"{env.get('git', {}).get('commit')}; quick={quick}.", ""]
  rates: Dict[str, float] = {}

  def setting(clients, per_client):
    return f"{clients} x {per_client}"

  settings = [(10, 600), (100, 60)] if not quick else [(10, 60), (20, 12)]
  if "1" in items or "2" in items:
    lines += ["## 1. Federation efficiency (FedAvg round vs Keras fit)", "",
              "| clients x examples | backend | examples/s | Keras fit "
              "examples/s | efficiency |", "|---|---|---|---|---|"]
    for clients, per_client in settings:
      for backend in ("local", "tff"):
        sim = make_simulation(clients, clients, per_client, backend,
                              FLAGS.model)
        seconds, examples, _ = time_rounds(sim, rounds)
        fit = keras_fit_rate(FLAGS.model, sim.x_train, sim.ds.y_train, 10)
        sim.close()
        rate = examples / seconds
        rates[f"{backend}/{clients}"] = rate
        lines.append(f"| {setting(clients, per_client)} | {backend} | "
                     f"{rate:.0f} | {fit:.0f} | {rate / fit:.2f} |")
    lines.append("")
  if "2" in items:
    lines += ["## 2. Against a plain tff.learning loop", "",
              "| clients per round | plain TFF examples/s | fedclf local "
              "examples/s | speed-up |", "|---|---|---|---|"]
    for clients in ([10, 100, 500] if not quick else [10, 20]):
      per_client = 60 if clients >= 100 else 600
      if quick:
        per_client = 12
      sim = make_simulation(clients, clients, per_client, "local",
                            FLAGS.model)
      seconds, examples, _ = time_rounds(sim, rounds)
      ours = examples / seconds
      plain = plain_tff_rate(FLAGS.model, sim.x_train, sim.ds.y_train,
                             clients, per_client, 10, rounds)
      lines.append(f"| {clients} ({per_client} each) | {plain:.0f} | "
                   f"{ours:.0f} | {ours / plain:.2f}x |")
    lines.append("")
  if "3" in items:
    late = 60 if quick else 200
    sim = make_simulation(500, 50, 60, "local", "mlp", rounds=late)
    state = sim.backend.initial_state(sim.eval_model)
    memory = {}
    for r in range(1, late + 1):
      state, _ = sim.train_round(state, {}, r)
      if r in (10, late):
        memory[r] = rss_mb()
    growth = memory[late] / memory[10] - 1
    lines += ["## 3. Memory over rounds (mlp, 50 clients per round)", "",
              f"Resident memory (process + children): {memory[10]:.0f} MiB "
              f"after round 10, {memory[late]:.0f} MiB after round {late} "
              f"({100 * growth:+.1f}%).", ""]
  if "4" in items:
    n = 2000 if quick else 10000
    sim = make_simulation(n, 100, 6, "local", "mlp", partitioner="dirichlet")
    seconds, _, _ = time_rounds(sim, rounds)
    lines += [f"## 4. Scale: {n} clients, 100 per round (mlp)", "",
              f"{seconds:.2f} s per round; resident memory {rss_mb():.0f} "
              f"MiB (the data once plus one index matrix per sampled client;"
              f" nothing per idle client).", ""]
  if "5" in items:
    from fedclf.federated import tff_runtime  # pylint: disable=g-import-not-at-top
    workers = [tff_runtime.start_local_worker() for _ in range(2)]
    try:
      times = {}
      for label, addrs in (("one owned worker", ()),
                           ("two workers on localhost",
                            [w.address for w in workers])):
        sim = make_simulation(10, 10, 60, "tff", "mlp", workers=addrs)
        times[label], _, _ = time_rounds(sim, rounds)
        sim.close()
    finally:
      for w in workers:
        w.stop()
    lines += ["## 5. Scale-out over TFF workers (mlp, 10 x 60)", ""]
    lines += [f"- {k}: {v:.2f} s per round" for k, v in times.items()]
    lines.append("")
  if "6" in items:
    sim = make_simulation(100, 10, 600, "local", FLAGS.model)
    state = sim.backend.initial_state(sim.eval_model)
    t0 = time.time()
    state, _ = sim.train_round(state, {}, 1)
    warm = time.time() - t0
    plan_t, train_t, eval_t = [], [], []
    for r in range(2, 2 + rounds):
      from fedclf.federated import rounds as rounds_lib  # pylint: disable=g-import-not-at-top
      t0 = time.time()
      plan = rounds_lib.plan_round(0, r, 100, 10, 0.0, 0.0)
      sim._tasks(plan, r)  # pylint: disable=protected-access
      plan_t.append(time.time() - t0)
      t0 = time.time()
      state, _ = sim.train_round(state, {}, r)
      train_t.append(time.time() - t0 - plan_t[-1])
      t0 = time.time()
      sim.evaluate(state, r)
      eval_t.append(time.time() - t0)
    lines += ["## 6. Where a round's time goes (local backend, 10 of 100 "
              "clients x 600, cnn)", "",
              f"- first round (tracing the client graph): {warm:.2f} s",
              f"- planning + batch index matrices: "
              f"{np.mean(plan_t) * 1000:.1f} ms",
              f"- client training + aggregation + server update: "
              f"{np.mean(train_t):.2f} s",
              f"- evaluation (1,000 test images): {np.mean(eval_t):.2f} s",
              ""]
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  with open(FLAGS.out, "w") as f:
    f.write("\n".join(lines))
  print("\n".join(lines))


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
