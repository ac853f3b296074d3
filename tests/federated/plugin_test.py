"""The example plugins work without editing fedclf: imported by --plugin,
examples/plugin_fedmedian registers `fedmedian`, which runs, and the
one-file examples/fedclf_normbound.py registers `normbound` with its own
hyper-parameter flag `--norm_bound`, which reaches the algorithm on both
backends."""

import json
import os
import sys

import numpy as np
import tensorflow as tf

from fedclf import plugins
from fedclf import registry
from tests.binary_batch import run_commands

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


def test_federated_binary_runs_plugin_algorithm(tmp_path):
  listing, local, tff = run_commands("simulations.federated", [
      ["--plugin=fedclf_fedmedian", "--list"],
      ["--plugin=fedclf_fedmedian", "--algorithm=fedmedian",
       "--dataset=digits", "--model=mlp", "--num_clients=10",
       "--clients_per_round=5", "--rounds=2", f"--out_dir={tmp_path}"],
      ["--plugin=fedclf_fedmedian", "--algorithm=fedmedian",
       "--dataset=digits", "--backend=tff", "--num_clients=10",
       "--clients_per_round=5", "--rounds=1",
       f"--out_dir={tmp_path / 'tff'}"]], python_path=[PLUGIN_DIR])
  assert listing.returncode == 0, listing.stderr[-1500:]
  assert "fedmedian" in listing.stdout
  assert local.returncode == 0, local.stderr[-2000:]
  assert "fedmedian: test accuracy" in local.stdout
  # No TFF form: the tff backend combines the updates on the driver.
  assert tff.returncode == 0, tff.stderr[-2000:]
  assert "fedmedian: test accuracy" in tff.stdout


# -- examples/fedclf_normbound.py: a one-file plugin with its own flag -------

EXAMPLES_DIR = os.path.join(ROOT, "examples")


def test_norm_bounded_mean_clips_each_update():
  sys.path.insert(0, EXAMPLES_DIR)
  try:
    plugins.load_plugins(["fedclf_normbound"], use_entry_points=False)
    from fedclf_normbound import NormBoundedMean  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.remove(EXAMPLES_DIR)
  deltas = [[tf.constant([3.0, 4.0])], [tf.constant([0.3, 0.4])]]
  (mean,) = NormBoundedMean(1.0).combine(deltas, [1.0, 3.0], 2, (0, 0))
  # [0.6, 0.8] (clipped to norm 1) and [0.3, 0.4] (kept), weighted 1:3.
  np.testing.assert_allclose(mean.numpy(), [0.375, 0.5], rtol=1e-6)
  assert registry.ALGORITHMS.params_class("normbound").__name__ == (
      "NormBoundParams")


def test_plugin_flag_in_help_and_on_both_backends(tmp_path):
  common = ["--plugin=fedclf_normbound", "--algorithm=normbound",
            "--dataset=digits", "--model=mlp", "--num_clients=10",
            "--clients_per_round=5", "--rounds=2", "--per_client_eval=0",
            "--checkpoint_every=0"]
  helpfull, default, tight, tff = run_commands("simulations.federated", [
      ["--plugin=fedclf_normbound", "--helpfull"],
      [*common, f"--out_dir={tmp_path / 'default'}"],
      [*common, "--norm_bound=0.01", "--prox_mu=0.5",
       f"--out_dir={tmp_path / 'tight'}"],
      [*common, "--norm_bound=0.01", "--backend=tff",
       f"--out_dir={tmp_path / 'tff'}"]], python_path=[EXAMPLES_DIR])
  assert "Traceback" not in helpfull.stderr, helpfull.stderr[-1500:]
  assert ("--norm_bound: normbound: L2 bound of each client's model update."
          in helpfull.stdout)
  assert "--prox_mu: fedprox: proximal term weight." in helpfull.stdout

  def result(proc, name):
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "normbound: test accuracy" in proc.stdout
    with open(tmp_path / name / "config.json") as f:
      resolved = json.load(f)["config"]["resolved"]
    with open(tmp_path / name / "summary.json") as f:
      return resolved["simulation"]["algorithm_params"], json.load(f)

  params, default = result(default, "default")
  assert params == {"norm_bound": 1.0}
  params, tight_summary = result(tight, "tight")
  assert params == {"norm_bound": 0.01}
  # Another algorithm's flag is ignored, with a warning.
  assert "--prox_mu is set, but algorithm normbound does not read it" in (
      tight.stderr)
  assert tight_summary["final_test_loss"] != default["final_test_loss"]
  params, tff_summary = result(tff, "tff")
  assert tff_summary["backend"] == "tff"
  assert params == {"norm_bound": 0.01}
  # The same rule on TFF's aggregators: the same model, up to float noise.
  np.testing.assert_allclose(tff_summary["final_test_loss"],
                             tight_summary["final_test_loss"], rtol=1e-3)
