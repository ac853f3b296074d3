"""Pinned scaling on one machine (results/benchmarks.md item 9): FedAvg
rounds on the tff backend over one TFF worker pinned to core 0 against two
pinned to cores 0 and 1, the same clients per round, alternating; and the
measurements `benchmarks.scaling_model` projects past this machine from.

Workers are `taskset -c <core> python -m simulations.tff_worker --port=N`
(taskset and the worker both exec, so the pinned process is the worker
itself), each in its own process group, stopped on every exit path. The
driver is pinned to the cores of the workers it uses (core 0 with one
worker, cores 0-1 with two): 1 core against 2 cores in all, so the driver's
own work does not get a free core in the one-worker case.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks import measure
from benchmarks import scaling_model

CONFIGS = {"1 worker": (0,), "2 workers": (0, 1)}
RATIO_TARGET = 1.7
WORKER_READY_S = 600


def pin_threads(cores: Sequence[int]) -> None:
  """Pins every thread of this process (TensorFlow's pools included) to
  `cores`; threads started later inherit it."""
  for tid in os.listdir("/proc/self/task"):
    try:
      os.sched_setaffinity(int(tid), set(cores))
    except OSError:  # a thread that has just ended
      pass


def start_pinned_worker(core: int, port: int) -> subprocess.Popen:
  """A TFF worker on `core` in a process group of its own."""
  return subprocess.Popen(
      ["taskset", "-c", str(core), sys.executable, "-m",
       "simulations.tff_worker", f"--port={port}"],
      cwd=measure.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), start_new_session=True)


def stop_workers(workers: Sequence[subprocess.Popen],
                 grace_s: float = 10) -> None:
  """SIGINT to each worker's group, then SIGKILL whatever is left."""
  for sig in (signal.SIGINT, signal.SIGKILL):
    for worker in workers:
      try:
        os.killpg(worker.pid, sig)
      except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + grace_s
    for worker in workers:
      try:
        worker.wait(timeout=max(0.1, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        pass


def cpu_seconds(pid: int) -> float:
  import psutil  # pylint: disable=g-import-not-at-top
  times = psutil.Process(pid).cpu_times()
  return times.user + times.system


def wire_bytes(row: Dict) -> Dict[str, float]:
  """The round's gRPC byte counts (`bytes/...` keys), if the backend
  reports them, and fedclf's own per-client accounting of the model."""
  out = {k: float(v) for k, v in row.items() if k.startswith("bytes/")}
  for key in ("upload_bytes", "download_bytes"):
    if key in row:
      out[key] = float(row[key])
  return out


def timed_rounds(sim, workers: Sequence[subprocess.Popen], repeats: int,
                 first_round: int) -> List[Dict]:
  """A warm-up round, then `repeats` rounds each with its wall seconds,
  the driver's and the workers' CPU seconds and its byte counts."""
  state = sim.rounds.initial_state()
  state, _ = sim.rounds.train_round(state, {}, first_round)
  rounds = []
  for r in range(first_round + 1, first_round + 1 + repeats):
    cpu0 = [time.process_time()] + [cpu_seconds(w.pid) for w in workers]
    t0 = time.perf_counter()
    state, row = sim.rounds.train_round(state, {}, r)
    wall = time.perf_counter() - t0
    cpu1 = [time.process_time()] + [cpu_seconds(w.pid) for w in workers]
    rounds.append({"seconds": wall, "driver_cpu": cpu1[0] - cpu0[0],
                   "worker_cpu": sum(cpu1[1:]) - sum(cpu0[1:]),
                   "examples": float(row.get("examples", 0.0)),
                   **wire_bytes(row)})
  return rounds


def measure_pinned_scaling(clients: int, examples_per_client: int,
                           model: str, repeats: int, runs: int) -> Dict:
  """Rounds on one pinned worker and on two, `runs` times each in ABBA
  order (a fresh simulation each time, after a warm-up round)."""
  import portpicker  # pylint: disable=g-import-not-at-top
  ports = [portpicker.pick_unused_port() for _ in (0, 1)]
  workers = [start_pinned_worker(core, port) for core, port in
             zip((0, 1), ports)]
  results: Dict[str, List[Dict]] = {label: [] for label in CONFIGS}
  try:
    from fedclf.federated.backends import tff_workers  # pylint: disable=g-import-not-at-top
    for port in ports:
      tff_workers.wait_until_ready(f"localhost:{port}", WORKER_READY_S)
    order = list(CONFIGS)
    for run in range(runs):
      for label in (order if run % 2 == 0 else order[::-1]):
        cores = CONFIGS[label]
        pin_threads(cores)
        sim = measure.make_simulation(
            clients, clients, examples_per_client, "tff", model,
            workers=[f"localhost:{ports[c]}" for c in cores])
        try:
          results[label] += timed_rounds(sim, workers[:len(cores)], repeats,
                                         1 + run * (repeats + 1))
        finally:
          sim.close()
  finally:
    stop_workers(workers)
  return {"clients": clients, "examples_per_client": examples_per_client,
          "model": model, "rounds": results}


def summarize(rounds: Sequence[Dict]) -> Dict[str, float]:
  """Best and median seconds, and medians of the other per-round figures."""
  seconds = [r["seconds"] for r in rounds]
  out = {"best_s": min(seconds), "median_s": float(np.median(seconds))}
  for key in rounds[0]:
    if key != "seconds":
      out[key] = float(np.median([r[key] for r in rounds]))
  return out


# -- the projection (results/scaling.md) --------------------------------------

PROJECTED_WORKERS = (4, 16, 64)
PROJECTED_GBIT = (1, 10)
PROJECTED_CLIENTS = (100, 1000)
MNIST_EXAMPLE_BYTES = 28 * 28 * 4 + 8  # float32 image, int64 label


WIRE_KEYS = ("bytes/sent_to_workers", "bytes/received_from_workers")
BYTES_TOLERANCE = 0.10


def round_bytes(summary: Dict[str, float]) -> Optional[float]:
  """Wire bytes of a round, both ways (`bytes/computations_to_workers` is
  a part of the sent bytes), or None where the backend reports none."""
  if not all(key in summary for key in WIRE_KEYS):
    return None
  return sum(summary[key] for key in WIRE_KEYS)


def expected_round_bytes(point: Dict) -> float:
  """A FedAvg round's wire bytes when no examples cross it: per worker the
  weights down once and one sum of its clients' weighted updates up (the
  broadcast and the sum run on the worker), plus the round's computation
  and each client's index matrix (int32, its examples rounded up to whole
  batches). The model's bytes are fedclf's own per-client download count."""
  model = point["download_bytes"] / point["clients"]
  batch = measure.LOCAL_BATCH_SIZE
  matrix = -(-point["examples_per_client"] // batch) * batch * 4
  return (2 * model * point["workers"] +
          point["bytes/computations_to_workers"] + matrix * point["clients"])


def fitted_model(points: Sequence[Dict]) -> Tuple[scaling_model.ScalingModel,
                                                   str]:
  """The model's parameters from the measured points (each a `summarize`
  dict with "workers" and "clients"), and how its bytes were obtained.

  Worker CPU per client: the one-worker point with the most clients (CPU
  time, which other jobs on the machine do not inflate). Driver seconds per
  client: the driver's CPU per client at the point with several workers
  and the most clients (a round's fixed driver work weighs least there; the
  one-worker point where there is none). Serial seconds per
  client and latency: a line, against the clients, through what the
  overlapping terms leave unexplained of the median round times of the
  points with several workers (the path past one machine); with fewer than
  two such client counts, no serial term and the wall time left over as
  latency."""
  base = max((p for p in points if p["workers"] == 1),
             key=lambda p: p["clients"])
  per_client, per_worker, how = _bytes_terms(points, base)
  several = [p for p in points if p["workers"] > 1] or [base]
  largest = max(several, key=lambda p: p["clients"])
  overlapping = scaling_model.ScalingModel(
      driver_s_per_client=largest["driver_cpu"] / largest["clients"],
      worker_s_per_client=base["worker_cpu"] / base["clients"],
      bytes_per_client=per_client, bytes_per_worker=per_worker)
  left = [p["median_s"] - scaling_model.round_seconds(
      overlapping, p["workers"], p["clients"], float("inf"))
          for p in several]
  serial, latency = 0.0, float(np.mean(left))
  if len({p["clients"] for p in several}) >= 2:
    slope, intercept = np.polyfit([p["clients"] for p in several], left, 1)
    serial, latency = max(float(slope), 0.0), float(intercept)
  return dataclasses.replace(overlapping, latency_s=max(0.0, latency),
                             serial_s_per_client=serial), how


def _bytes_terms(points: Sequence[Dict], base: Dict) -> Tuple[float, float,
                                                              str]:
  measured = [(p["workers"], p["clients"], round_bytes(p)) for p in points]
  if all(b is not None for _, _, b in measured):
    return (*scaling_model.fit_bytes(measured),
            "fitted to the rounds' `bytes/...` counts (least squares over "
            "the measured points)")
  per_client = (base["examples"] / base["clients"] * MNIST_EXAMPLE_BYTES +
                (base.get("upload_bytes", 0.0) +
                 base.get("download_bytes", 0.0)) / base["clients"])
  return (per_client, 0.0,
          "assumed, as this build reports no `bytes/...` counts: each "
          "client's examples (float32 images, int64 labels: today's tff "
          "backend ships them) plus fedclf's own per-client accounting of "
          "the model (download + upload); an upper bound where workers "
          "merge their clients' updates before sending")


def measured_points(measurements: Sequence[Dict]) -> List[Dict]:
  """One `summarize` dict per (measurement, configuration), with its
  "label", "workers" and "clients"."""
  points = []
  for m in measurements:
    for label, rounds in m["rounds"].items():
      points.append({"label": label, "workers": len(CONFIGS[label]),
                     "clients": m["clients"],
                     "examples_per_client": m["examples_per_client"],
                     **summarize(rounds)})
  return points


def model_lines(model: scaling_model.ScalingModel, how: str) -> List[str]:
  return [
      "## The model", "", scaling_model.__doc__.split("\n\n", 1)[1].strip(),
      "", "Parameters, from this machine's measurements:", "",
      f"- driver seconds per client: "
      f"{1e3 * model.driver_s_per_client:.1f} ms",
      f"- worker CPU per client (one core): "
      f"{1e3 * model.worker_s_per_client:.1f} ms",
      f"- serial seconds per client: "
      f"{1e3 * model.serial_s_per_client:.1f} ms",
      f"- latency per round: {model.latency_s:.2f} s",
      f"- bytes per client: {model.bytes_per_client / 2**20:.2f} MiB; per "
      f"worker: {model.bytes_per_worker / 2**20:.2f} MiB ({how})", ""]


def measured_lines(model: scaling_model.ScalingModel,
                   points: Sequence[Dict]) -> List[str]:
  lines = ["## Measured points next to the model", "",
           "On localhost (no network term). The serial term and the "
           "latency are fitted to the points with several workers; the "
           "one-worker points show how far they carry over (a round of up "
           "to --tff_clients_per_call clients on one worker is not split). "
           "With two workers the driver shares their two "
           "cores, which the model (driver on a machine of its own) does "
           "not charge. Wall times include other jobs' load on this "
           "machine; CPU times do not.", "",
           "| workers (cores) | clients x examples | measured s/round "
           "(median) | model s/round | driver CPU s | worker CPU s |",
           "|---|---|---|---|---|---|"]
  for p in points:
    predicted = scaling_model.round_seconds(model, p["workers"], p["clients"],
                                            float("inf"))
    lines.append(f"| {p['label']} | {p['clients']} x "
                 f"{p['examples_per_client']} | {p['median_s']:.2f} | "
                 f"{predicted:.2f} | {p['driver_cpu']:.2f} | "
                 f"{p['worker_cpu']:.2f} |")
  return lines + [""]


def projection_lines(model: scaling_model.ScalingModel) -> List[str]:
  lines = ["## Projection", "",
           "Expected seconds per round (and what sets the pace).", "",
           "| workers | link | " + " | ".join(
               f"{c} clients" for c in PROJECTED_CLIENTS) +
           " | driver or network slower than the workers from |",
           "|---|---|" + "---|" * (len(PROJECTED_CLIENTS) + 1)]
  for workers in PROJECTED_WORKERS:
    for gbit in PROJECTED_GBIT:
      cells = [f"{scaling_model.round_seconds(model, workers, c, gbit):.2f}"
               f" ({scaling_model.bottleneck(model, workers, c, gbit)})"
               for c in PROJECTED_CLIENTS]
      found = scaling_model.bottleneck_clients(model, workers, gbit)
      first = (f"{found[0]} client(s) per round ({found[1]})" if found else
               "never (up to 100,000)")
      lines.append(f"| {workers} | {gbit} Gbit/s | {' | '.join(cells)} | "
                   f"{first} |")
  return lines + [""]


def scaling_markdown(measurements: Sequence[Dict], header: str) -> str:
  """results/scaling.md: the model, its parameters, the measured points
  next to it and the projection to 4, 16 and 64 workers."""
  points = measured_points(measurements)
  model, how = fitted_model(points)
  lines = ["# Scaling past one machine (tff backend)", "", header, ""]
  lines += model_lines(model, how)
  lines += measured_lines(model, points)
  lines += projection_lines(model)
  return "\n".join(lines)


def render_again(json_path: str, markdown_path: str, note: str) -> None:
  """Writes `markdown_path` again from the rounds `json_path` holds (what
  item 9 measured), keeping the markdown's header (machine, versions,
  commit, command of the measuring run) and adding `note` to it: for a
  change of the model, not of the measurements."""
  with open(json_path) as f:
    measurements = json.load(f)
  with open(markdown_path) as f:
    old = f.read()
  header = old.split("\n\n", 1)[1].split("\n## ", 1)[0].strip()
  header = "\n".join(line for line in header.splitlines()
                     if not line.startswith("- Model rendered again"))
  text = scaling_markdown(measurements, f"{header}\n- {note}")
  from fedclf.results.record import atomic_write_text  # pylint: disable=g-import-not-at-top
  atomic_write_text(markdown_path, text + "\n")


if __name__ == "__main__":
  # python -m benchmarks.scaling [results/scaling.json results/scaling.md]
  args = sys.argv[1:] or ["results/scaling.json", "results/scaling.md"]
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True,
                          check=False).stdout.strip()
  render_again(*args, note=f"Model rendered again from {args[0]} at commit "
               f"{commit or 'unknown'} (same measurements).")
