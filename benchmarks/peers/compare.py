"""Runs the peer benchmark's sides as separate processes and compares them.

fedclf's local and tff backends (`benchmarks.peers.fedclf_fedavg`, in
fedclf's environment) and Flower (`benchmarks.peers.flower_fedavg`, in
`.venv-peers`) run the same workload (`benchmarks.peers.workload`), one
process at a time, in an order that rotates from run to run so that slow
drifts in the machine's load spread over all sides. Each side's memory is
the peak of the summed resident memory of its whole process tree (Ray's
raylet, GCS and client actors for Flower; the TFF worker for fedclf's tff
backend), sampled every 0.1 s from outside.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np

from benchmarks import measure
from fedclf.errors import UserError

PEERS_VENV = ".venv-peers"
FLOWER = "Flower"
SIDES = ("fedclf local", "fedclf tff", FLOWER)
THROUGHPUT_TARGET = 2.0  # fedclf local over Flower, rounds per second
MEMORY_TARGET = 0.5  # fedclf local's peak memory over Flower's
SIDE_TIMEOUT_S = 1800
# Ray's raylet aborts when its dashboard agent takes over 15 s to start (a
# hard-coded limit, ray-project/ray#65983), as on a loaded machine, and the
# simulation then hangs: a dead one ends the side (which is tried again)
# unless the side ends by itself within DEAD_GRACE_S (Ray's shutdown at the
# end of a run also leaves them dead for a moment).
VITAL_HELPERS = ("raylet", "gcs_server")
DEAD_GRACE_S = 30
ATTEMPTS = 5


def peers_python(venv: str = PEERS_VENV) -> str:
  """The interpreter of the peers environment `venv` (relative to the
  repository root, or absolute); a UserError if it is missing."""
  path = os.path.join(measure.ROOT, venv, "bin", "python")
  if not os.access(path, os.X_OK):
    raise UserError(f"{path} is missing: `make bench-peers` builds the "
                    f"peers' environment (Flower needs protobuf 5, so it "
                    f"cannot share fedclf's)")
  return path


def side_command(side: str, clients: int, examples_per_client: int,
                 rounds: int, python: str) -> List[str]:
  """The command line that runs `side` (one of SIDES)."""
  sizes = [f"--clients={clients}",
           f"--examples_per_client={examples_per_client}",
           f"--rounds={rounds}"]
  if side == FLOWER:
    return [python, "-m", "benchmarks.peers.flower_fedavg", *sizes]
  backend = side.split()[-1]
  return [sys.executable, "-m", "benchmarks.peers.fedclf_fedavg",
          f"--backend={backend}", *sizes]


def tree_rss_mib(pid: int) -> Tuple[float, List[str]]:
  """Resident memory of process `pid` and all its descendants, summed, and
  the names of the dead (zombie) ones among VITAL_HELPERS."""
  import psutil  # pylint: disable=g-import-not-at-top
  try:
    root = psutil.Process(pid)
    procs = [root] + root.children(recursive=True)
  except psutil.Error:
    return 0.0, []
  total, dead = 0, []
  for proc in procs:
    try:
      if proc.status() == psutil.STATUS_ZOMBIE:
        dead += [proc.name()] if proc.name() in VITAL_HELPERS else []
      else:
        total += proc.memory_info().rss
    except psutil.Error:
      pass
  return total / 2**20, dead


def stop_group(proc: subprocess.Popen) -> None:
  """Kills what is left of `proc`'s process group (Ray's helpers too)."""
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass
  proc.wait()


def run_side(command: Sequence[str], env: Dict[str, str],
             timeout_s: float = SIDE_TIMEOUT_S) -> Tuple[Dict, float]:
  """Runs `command` in its own process group from the repository root:
  (the JSON object of its last stdout line, its tree's peak MiB)."""
  with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
    proc = subprocess.Popen(list(command), cwd=measure.ROOT, env=env,
                            stdout=out, stderr=err, start_new_session=True)
    peak, dead, deadline = 0.0, [], time.monotonic() + timeout_s
    try:
      while proc.poll() is None and time.monotonic() < deadline:
        mib, now_dead = tree_rss_mib(proc.pid)
        peak = max(peak, mib)
        if now_dead and not dead:
          dead = now_dead
          deadline = min(deadline, time.monotonic() + DEAD_GRACE_S)
        time.sleep(0.1)
    finally:
      stop_group(proc)
    out.seek(0)
    lines = out.read().decode(errors="replace").strip().splitlines()
    if proc.returncode or not lines:  # killed at the deadline: -9
      err.seek(0)
      tail = err.read().decode(errors="replace").strip().splitlines()[-5:]
      raise RuntimeError(f"{' '.join(command)} failed (exit "
                         f"{proc.returncode}{', dead: ' if dead else ''}"
                         f"{', '.join(dead)}): {' | '.join(tail)}")
  return json.loads(lines[-1]), peak


def run_with_retries(command: Sequence[str], env: Dict[str, str],
                     attempts: int = ATTEMPTS) -> Tuple[Dict, float]:
  """`run_side`, tried again (up to `attempts` in all) when it fails."""
  for attempt in range(1, attempts + 1):
    try:
      return run_side(command, env)
    except RuntimeError as e:
      if attempt == attempts:
        raise
      print(f"attempt {attempt} of {attempts} failed, again: {e}",
            file=sys.stderr, flush=True)
  raise AssertionError("unreachable")


def side_env(data_dir: str) -> Dict[str, str]:
  return dict(os.environ, FEDCLF_DATA_DIR=data_dir, TF_CPP_MIN_LOG_LEVEL="2",
              PYTHONPATH=measure.ROOT)


def measure_setting(clients: int, examples_per_client: int, runs: int,
                    timed_rounds: int, data_dir: str,
                    python: str) -> Dict[str, Dict]:
  """Every side `runs` times (rotating order), each run a warm-up round and
  `timed_rounds` timed ones, Flower's with the interpreter `python`: per
  side, the timed rounds' seconds and the peak memory of each run."""
  results = {side: {"round_seconds": [], "peak_mib": []} for side in SIDES}
  for run in range(runs):
    for side in SIDES[run % len(SIDES):] + SIDES[:run % len(SIDES)]:
      out, peak = run_with_retries(
          side_command(side, clients, examples_per_client, timed_rounds + 1,
                       python), side_env(data_dir))
      results[side]["round_seconds"].extend(out["round_seconds"][1:])
      results[side]["peak_mib"].append(peak)
  return results


def summary(results: Dict[str, Dict]) -> Dict[str, Dict[str, float]]:
  """Per side: best and median s/round, peak MiB, and the ratios to
  Flower (round throughput = Flower's s/round over the side's; memory =
  the side's peak over Flower's)."""
  flower = results[FLOWER]
  out = {}
  for side, r in results.items():
    best = min(r["round_seconds"])
    out[side] = {
        "best_s": best, "median_s": float(np.median(r["round_seconds"])),
        "peak_mib": max(r["peak_mib"]),
        "throughput_vs_flower": min(flower["round_seconds"]) / best,
        "memory_vs_flower": max(r["peak_mib"]) / max(flower["peak_mib"])}
  return out
