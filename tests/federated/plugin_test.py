"""The example plugin (examples/plugin_fedmedian) works without editing
fedclf: imported by --plugin, it registers `fedmedian`, which runs."""

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from fedclf import plugins
from fedclf import registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PLUGIN_DIR = os.path.join(ROOT, "examples", "plugin_fedmedian")


def test_median_aggregator_ignores_an_outlier():
  sys.path.insert(0, PLUGIN_DIR)
  try:
    plugins.load_plugins(["fedclf_fedmedian"], use_entry_points=False)
    from fedclf_fedmedian import CoordinateMedian  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.remove(PLUGIN_DIR)
  deltas = [[tf.constant([1.0, 2.0])], [tf.constant([1.5, 2.5])],
            [tf.constant([1e6, -1e6])]]
  (median,) = CoordinateMedian().combine(deltas, [1.0, 1.0, 1.0], 3, (0, 0))
  np.testing.assert_allclose(median.numpy(), [1.5, 2.0])
  assert "fedmedian" in registry.ALGORITHMS


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=os.pathsep.join([PLUGIN_DIR,
                                         os.environ.get("PYTHONPATH", "")]))
  return subprocess.run([sys.executable, "-m", "simulations.federated",
                         "--plugin=fedclf_fedmedian", *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


def test_federated_binary_runs_plugin_algorithm(tmp_path):
  listing = _run("--list")
  assert listing.returncode == 0, listing.stderr[-1500:]
  assert "fedmedian" in listing.stdout
  proc = _run("--algorithm=fedmedian", "--dataset=digits", "--model=mlp",
              "--num_clients=10", "--clients_per_round=5", "--rounds=2",
              f"--out_dir={tmp_path}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "fedmedian: test accuracy" in proc.stdout
  tff = _run("--algorithm=fedmedian", "--dataset=digits", "--backend=tff",
             "--num_clients=10", "--clients_per_round=5", "--rounds=1",
             f"--out_dir={tmp_path / 'tff'}")
  assert tff.returncode == 2
  assert "no TFF form" in tff.stderr and "Traceback" not in tff.stderr
