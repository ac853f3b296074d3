"""The peer benchmark (results/benchmarks.md item 8) without Flower: the
workload both sides run is the same, sides' process trees are measured and
stopped, the ratios are right, and the item refuses with one line when
the peers' environment is missing."""

import os
import sys
import time

import numpy as np
import pytest

from benchmarks import measure
from benchmarks import report_sections
from benchmarks.peers import compare
from benchmarks.peers import workload
from fedclf.errors import UserError
from tests import binary_batch

REAL_DATA = os.environ.get("FEDCLF_DATA_DIR", "")
needs_real_data = pytest.mark.skipif(
    not os.path.isdir(os.path.join(REAL_DATA, "mnist")),
    reason="FEDCLF_DATA_DIR with the real MNIST files is not set")


def test_hyper_parameters_match_fedclfs_side():
  assert workload.CLIENT_LR == measure.CLIENT_LR
  assert workload.BATCH_SIZE == measure.LOCAL_BATCH_SIZE
  assert workload.LOCAL_EPOCHS == 1
  assert workload.SETTINGS == tuple(report_sections.EFFICIENCY_TARGETS)


def test_the_same_model_on_both_sides():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fedclf.models import build_classifier  # pylint: disable=g-import-not-at-top
  ours = build_classifier("cnn", (28, 28, 1), 10)
  peers = workload.mcmahan_cnn(tf.keras)
  assert ours.count_params() == peers.count_params() == (
      workload.CNN_PARAMETERS)
  assert ([w.shape for w in ours.get_weights()] ==
          [w.shape for w in peers.get_weights()])
  assert peers.output_shape == ours.output_shape == (None, 10)


def test_client_indices_split_a_seeded_slice_evenly():
  parts = workload.client_indices(4, 3)
  assert [len(p) for p in parts] == [3, 3, 3, 3]
  joined = np.concatenate(parts)
  assert len(set(joined.tolist())) == 12
  assert joined.max() < workload.MNIST_TRAIN_SIZE
  again = workload.client_indices(4, 3)
  assert all(np.array_equal(a, b) for a, b in zip(parts, again))


@needs_real_data
@pytest.mark.parametrize("clients,per_client", [(100, 60), (7, 13)])
def test_the_same_examples_per_client_as_make_simulation(clients, per_client):
  sim = measure.make_simulation(clients, clients, per_client, "local", "cnn",
                                test_limit=10)
  try:
    images, labels = workload.mnist_train_uint8(REAL_DATA)
    parts = workload.client_indices(clients, per_client)
    assert len(parts) == len(sim.clients) == sim.sim.clients_per_round
    for rows, ours in zip(parts, sim.clients):
      x, y = workload.as_model_inputs(images[rows], labels[rows])
      np.testing.assert_array_equal(x, sim.ds.x_train[ours])
      np.testing.assert_array_equal(y, sim.ds.y_train[ours])
  finally:
    sim.close()


def test_summary_ratios_on_hand_numbers():
  results = {
      "fedclf local": {"round_seconds": [2.0, 1.0, 1.5], "peak_mib": [900]},
      "fedclf tff": {"round_seconds": [4.0], "peak_mib": [1500, 1800]},
      "Flower": {"round_seconds": [3.0, 2.5], "peak_mib": [3000, 2000]}}
  s = compare.summary(results)
  assert s["fedclf local"]["best_s"] == 1.0
  assert s["fedclf local"]["median_s"] == 1.5
  assert s["fedclf local"]["throughput_vs_flower"] == 2.5  # 2.5 s / 1.0 s
  assert s["fedclf local"]["memory_vs_flower"] == 0.3  # 900 / 3000
  assert s["fedclf tff"]["throughput_vs_flower"] == 0.625
  assert s["fedclf tff"]["memory_vs_flower"] == 0.6
  assert s["Flower"]["throughput_vs_flower"] == 1.0


def test_side_commands():
  local = compare.side_command("fedclf local", 10, 600, 3, "/p/python")
  assert local[1:] == ["-m", "benchmarks.peers.fedclf_fedavg",
                       "--backend=local", "--clients=10",
                       "--examples_per_client=600", "--rounds=3"]
  assert compare.side_command("fedclf tff", 10, 600, 3, "x")[3] == (
      "--backend=tff")
  flower = compare.side_command("Flower", 100, 60, 2, "/p/python")
  assert flower == ["/p/python", "-m", "benchmarks.peers.flower_fedavg",
                    "--clients=100", "--examples_per_client=60",
                    "--rounds=2"]


def test_run_side_reads_json_measures_and_stops_the_tree(tmp_path):
  pid_file = tmp_path / "grandchild.pid"
  # The side leaves a grandchild behind (as Ray's helpers could) and holds
  # 64 MiB while it runs.
  script = (
      "import json, subprocess, sys, time\n"
      "p = subprocess.Popen([sys.executable, '-c', "
      "'import time; time.sleep(60)'])\n"
      f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
      "block = bytearray(64 * 2**20)\n"
      "time.sleep(0.5)\n"
      "print('noise'); print(json.dumps({'round_seconds': [3.0, 1.0]}))\n")
  out, peak = compare.run_side([sys.executable, "-c", script],
                               dict(os.environ))
  assert out == {"round_seconds": [3.0, 1.0]}
  assert peak > 64
  # SIGKILLed with its group; on loaded cores it may take a moment to be
  # scheduled and die (seen in CI beside two grids: still running at 0.2 s).
  pid = int(pid_file.read_text())
  deadline = time.monotonic() + 10
  while running(pid) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert not running(pid)


def running(pid: int) -> bool:
  """Whether `pid` runs (a killed orphan may stay a zombie until the
  container's init reaps it)."""
  import psutil  # pylint: disable=g-import-not-at-top
  try:
    return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
  except psutil.NoSuchProcess:
    return False


def test_run_side_failure_names_the_command_and_stderr():
  with pytest.raises(RuntimeError, match=r"exit 3.*boom"):
    compare.run_side([sys.executable, "-c",
                      "import sys; sys.exit('boom' and 3) if "
                      "print('boom', file=sys.stderr) is None else 0"],
                     dict(os.environ))


def test_a_dead_raylet_ends_the_side_at_once(tmp_path):
  # A child that exits unreaped under the name "raylet" (as Ray's does
  # when its dashboard agent starts too slowly) while the side waits on.
  raylet = tmp_path / "raylet"
  raylet.symlink_to("/bin/true")
  # (Held in a variable: a dropped Popen may reap its child at once.)
  script = (f"import subprocess, time\n"
            f"child = subprocess.Popen([{str(raylet)!r}])\n"
            "time.sleep(120)\n")
  start = time.monotonic()
  with pytest.raises(RuntimeError, match="dead: raylet"):
    compare.run_side([sys.executable, "-c", script], dict(os.environ))
  assert time.monotonic() - start < compare.DEAD_GRACE_S + 30


def test_a_side_that_ends_well_after_its_raylet_died_counts(tmp_path):
  # As at the end of a run: Ray's shutdown leaves the raylet dead a moment
  # before the side prints its result.
  raylet = tmp_path / "raylet"
  raylet.symlink_to("/bin/true")
  script = (f"import json, subprocess, time\n"
            f"child = subprocess.Popen([{str(raylet)!r}])\n"
            "time.sleep(1)\nprint(json.dumps({'round_seconds': [1.0]}))\n")
  out, _ = compare.run_side([sys.executable, "-c", script], dict(os.environ))
  assert out == {"round_seconds": [1.0]}


def test_run_with_retries_tries_a_failed_side_again(tmp_path):
  tries = tmp_path / "tries"
  script = (
      "import json, os, sys\n"
      f"path = {str(tries)!r}\n"
      "n = int(open(path).read()) + 1 if os.path.exists(path) else 1\n"
      "open(path, 'w').write(str(n))\n"
      "sys.exit(1) if n < 3 else print(json.dumps({'tries': n}))\n")
  command = [sys.executable, "-c", script]
  out, _ = compare.run_with_retries(command, dict(os.environ), attempts=3)
  assert out == {"tries": 3}
  tries.unlink()
  with pytest.raises(RuntimeError, match="exit 1"):
    compare.run_with_retries(command, dict(os.environ), attempts=2)


def test_peers_python_refuses_a_missing_environment(tmp_path):
  with pytest.raises(UserError, match="make bench-peers"):
    compare.peers_python(str(tmp_path / "nowhere"))


def test_item_8_refuses_with_one_line_without_the_environment(tmp_path):
  # One process answers all three (binary_batch): TensorFlow loads once.
  missing, peer_runs, scaling_runs = binary_batch.run_commands(
      "benchmarks.federation_bench", [
          ["--items=8", f"--peers_venv={tmp_path / 'absent'}",
           f"--out={tmp_path / 'bench.md'}"],
          ["--items=8", "--peer_runs=0", f"--out={tmp_path / 'a.md'}"],
          ["--items=9", "--scaling_runs=-1", f"--out={tmp_path / 'b.md'}"]])
  binary_batch.assert_one_error_line(missing, "make bench-peers")
  binary_batch.assert_one_error_line(peer_runs, "peer_runs must be >= 1")
  binary_batch.assert_one_error_line(scaling_runs,
                                     "scaling_runs must be >= 1")
  assert not list(tmp_path.glob("*.md"))
