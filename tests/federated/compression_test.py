"""Compressed uploads (top-k with error feedback, stochastic quantization)
and the uploaded bytes every run records."""

import copy
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated import ClientOutput
from fedclf.federated import CompressionConfig
from fedclf.federated.communication import CommunicationTotals
from fedclf.federated.compression import CompressedUpload
from fedclf.federated.compression import index_bytes
from fedclf.federated.compression import quantized_bytes
from fedclf.federated.compression import stochastic_quantize
from fedclf.federated.compression import topk_bytes
from fedclf.federated.compression import topk_count
from tests.federated.simulation_test import read_rows
from tests.federated.simulation_test import run
from tests.federated.simulation_test import tiny_config


class FixedDeltas:
  """A stateless client work that reports a given delta per call."""

  stateful = False

  def __init__(self, deltas, dropped=0.0):
    self.deltas = list(deltas)
    self.dropped = dropped

  def initial_client_state(self, trainable):
    return []

  def train(self, model, velocity, global_trainable, global_non_trainable,
            batches, num_examples, client_state, server_extra, seed):
    delta = [tf.constant(self.deltas.pop(0), tf.float32)]
    return ClientOutput(delta=delta, non_trainable=[], weight=1.0,
                        extra_delta=[], client_state=list(client_state),
                        dropped=tf.constant(self.dropped), loss_sum=0.0,
                        correct=0.0, examples=1.0, steps=1)


def upload(work, state, seed=(1, 2)):
  return work.train(None, [], [tf.zeros([6])], [], None, 1.0, state, [],
                    tf.constant(seed, tf.int64))


def test_topk_keeps_largest_entries_and_feeds_back_the_rest():
  first = [3.0, -1.0, 0.5, -4.0, 2.0, 0.1]
  second = [0.0, 1.5, 0.0, 0.0, -2.5, 0.0]
  work = CompressedUpload(FixedDeltas([first, second]),
                          CompressionConfig("topk", topk_fraction=1 / 3))
  assert work.stateful
  state = work.initial_client_state([tf.zeros([6])])
  out = upload(work, state)
  # k = ceil(6 / 3) = 2: the entries 3 and -4 are sent, the rest stays.
  np.testing.assert_allclose(out.delta[0], [3, 0, 0, -4, 0, 0])
  np.testing.assert_allclose(out.client_state[0],
                             [0, -1, 0.5, 0, 2, 0.1])
  # 2 x (4-byte value + 1-byte index into 6 entries).
  assert int(out.upload_bytes) == 10
  # Round 2 sends the top 2 of delta + residual = [0, .5, .5, 0, -.5, .1].
  out = upload(work, out.client_state)
  np.testing.assert_allclose(out.delta[0], [0, 0.5, 0.5, 0, 0, 0])
  np.testing.assert_allclose(out.client_state[0], [0, 0, 0, 0, -0.5, 0.1],
                             atol=1e-7)


def test_wrapper_forwards_what_it_does_not_change():
  inner = FixedDeltas([])
  inner.lr = 0.5  # e.g. a setting or hook the backends ask the work for
  work = CompressedUpload(inner, CompressionConfig("quantize"))
  assert work.lr == 0.5 and not work.stateful
  assert copy.copy(work).lr == 0.5  # copies (with_objective) still work
  with pytest.raises(AttributeError):
    work.missing  # pylint: disable=pointless-statement


def test_dropped_client_sends_nothing_and_keeps_its_residual():
  work = CompressedUpload(FixedDeltas([[0.0] * 6], dropped=1.0),
                          CompressionConfig("topk", topk_fraction=0.5))
  residual = [tf.constant([1.0, 2, 3, 4, 5, 6])]
  out = upload(work, residual)
  np.testing.assert_allclose(out.delta[0], np.zeros(6))
  np.testing.assert_allclose(out.client_state[0], [1, 2, 3, 4, 5, 6])


def test_byte_formulas():
  assert topk_count(30, 0.1) == 3  # not 4 (0.1 * 30 = 3.0000000000000004)
  assert topk_count(5, 0.01) == 1
  assert [index_bytes(n) for n in (2, 256, 257, 65536, 65537)] == [
      1, 1, 2, 2, 3]
  assert topk_bytes(70000, 0.1) == 7000 * (4 + 3)
  assert topk_bytes(10, 1.0) == 40  # never more than dense
  assert quantized_bytes(10, 4) == 5 + 8
  assert quantized_bytes(10, 3) == 4 + 8  # 30 bits in 4 bytes


def test_quantization_is_exact_at_levels_and_unbiased():
  levels = tf.constant([0.0, 1.0, 2.0, 3.0, 3.0, 0.0])
  for s in range(5):
    np.testing.assert_array_equal(
        stochastic_quantize(levels, 2, tf.constant([s, 1], tf.int64)),
        levels)
  values = tf.constant([-1.0, -0.3, 0.2, 0.25, 0.9, 2.0])
  decoded = [stochastic_quantize(values, 2, tf.constant([s, 7], tf.int64))
             for s in range(400)]
  grid = -1.0 + np.arange(4)  # 2 bits: 4 levels from -1 to 2
  assert all(np.isin(np.asarray(d), grid).all() for d in decoded)
  np.testing.assert_allclose(np.mean(decoded, axis=0), values, atol=0.06)
  # The same seed gives the same rounding.
  np.testing.assert_array_equal(decoded[3], stochastic_quantize(
      values, 2, tf.constant([3, 7], tf.int64)))


@pytest.mark.parametrize("bad", [
    CompressionConfig("topk", topk_fraction=0.0),
    CompressionConfig("topk", topk_fraction=1.5),
    CompressionConfig("quantize", quantize_bits=0),
    CompressionConfig("quantize", quantize_bits=17),
    CompressionConfig("zip")])
def test_bad_settings_are_refused(bad):
  with pytest.raises(UserError) as e:
    bad.validate()
  assert "\n" not in str(e.value)


def test_totals_count_restored_rows_once():
  totals = CommunicationTotals([{"upload_bytes": 10, "download_bytes": 4},
                                {"upload_bytes": 5, "download_bytes": 4},
                                {"test_accuracy": 0.5}])
  totals.add({"upload_bytes": 1_000_000, "download_bytes": 0})
  assert totals.fields() == {
      "total_upload_bytes": 1_000_015, "total_upload_megabytes": 1.000015,
      "total_download_bytes": 8, "total_download_megabytes": 8e-6}
  assert CommunicationTotals([{"round": 1}]).fields() == {}


def compressed(config, method, **settings):
  return dataclasses.replace(config, simulation=dataclasses.replace(
      config.simulation, compression=CompressionConfig(method, **settings)))


def dense_model_bytes(sim):
  return 4 * sum(w.size for w in sim.final_state.trainable)


def test_rows_and_summary_count_dense_uploads(tmp_path):
  sim, summary = run(tiny_config("fedavg", rounds=2), tmp_path)
  rows = read_rows(tmp_path)
  for row in rows:
    trained = row["clients_reported"] - row["clients_nonfinite"]
    assert row["upload_bytes"] == trained * dense_model_bytes(sim)
    assert row["upload_bytes_per_client"] == dense_model_bytes(sim)
    assert row["download_bytes"] == 4 * dense_model_bytes(sim)
  assert summary["total_upload_bytes"] == sum(r["upload_bytes"]
                                              for r in rows)
  assert summary["total_upload_megabytes"] == pytest.approx(
      summary["total_upload_bytes"] / 1e6)


def test_topk_composes_with_scaffold_and_resumes(tmp_path):
  full = compressed(tiny_config("scaffold", rounds=3), "topk",
                    topk_fraction=0.1)
  sim_a, summary_a = run(full, tmp_path / "a")
  first = dataclasses.replace(
      full, simulation=dataclasses.replace(full.simulation, rounds=2))
  run(first, tmp_path / "b")
  # As if killed after round 2's row but before its checkpoint: the resumed
  # run restores round 1 and trains round 2 again, and its row once.
  with open(tmp_path / "b" / "checkpoints" / "round_00002.npz", "r+b") as f:
    f.truncate(1000)
  sim_b, summary_b = run(full, tmp_path / "b", resume=True)
  assert [r["round"] for r in read_rows(tmp_path / "b")] == [1, 2, 3]
  for a, b in zip(sim_a.final_state.trainable, sim_b.final_state.trainable):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The restored rounds' bytes count once.
  assert summary_b["total_upload_bytes"] == summary_a["total_upload_bytes"]
  # Per client: the top-k weights plus SCAFFOLD's dense control step.
  sizes = [w.size for w in sim_a.final_state.trainable]
  per_client = (sum(topk_bytes(n, 0.1) for n in sizes) +
                4 * sum(sizes))
  rows = read_rows(tmp_path / "a")
  assert all(r["upload_bytes_per_client"] == per_client for r in rows)


def test_quantized_run_uploads_an_eighth_of_fedavg(tmp_path):
  _, dense = run(tiny_config("fedavg", rounds=2), tmp_path / "dense")
  _, quantized = run(compressed(tiny_config("fedavg", rounds=2), "quantize",
                                quantize_bits=4), tmp_path / "q")
  ratio = quantized["total_upload_bytes"] / dense["total_upload_bytes"]
  assert 0.125 < ratio < 0.13  # 4 of 32 bits, plus 8 bytes per tensor
  assert quantized["final_test_accuracy"] > 0.2


@pytest.mark.parametrize("algorithm,method,settings", [
    ("scaffold", "topk", {"topk_fraction": 0.1}),
    ("fedavg", "quantize", {"quantize_bits": 4})])
def test_backends_agree_on_compressed_runs(tmp_path, algorithm, method,
                                           settings):
  # The same client-side codec runs inside TFF's client computation.
  from tests.federated.backends.tff_test import config  # pylint: disable=g-import-not-at-top
  from tests.federated.simulation_runs import final_weights  # pylint: disable=g-import-not-at-top
  results = {}
  for backend in ("local", "tff"):
    cfg = compressed(config(algorithm, backend, rounds=2), method,
                     **settings)
    results[backend] = final_weights(cfg, tmp_path / backend)
  (local, local_summary), (tff, tff_summary) = (results["local"],
                                                results["tff"])
  assert tff_summary["backend"] == "tff"
  for a, b in zip(local.trainable + local.extra, tff.trainable + tff.extra):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  assert (tff_summary["total_upload_bytes"] ==
          local_summary["total_upload_bytes"] > 0)
