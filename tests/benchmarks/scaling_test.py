"""The scaling model of results/scaling.md on hand-computed numbers, the
parameters it takes from measured points, and the pinned-worker plumbing
of benchmarks/scaling.py (item 9)."""

import json
import os
import subprocess
import time

import pytest

from benchmarks import scaling
from benchmarks import scaling_model
from benchmarks.scaling_model import ScalingModel
from tests.benchmarks.peers_test import running

MODEL = ScalingModel(driver_s_per_client=0.01, worker_s_per_client=0.5,
                     bytes_per_client=1e6, bytes_per_worker=2e6,
                     latency_s=0.2)


def test_round_terms_and_seconds():
  # 10 clients on 4 workers: the slowest worker trains ceil(10/4) = 3.
  terms = scaling_model.round_terms(MODEL, 4, 10, 1)
  assert terms["driver"] == pytest.approx(0.1)
  assert terms["compute"] == pytest.approx(1.5)
  assert terms["network"] == pytest.approx((1e7 + 8e6) * 8 / 1e9)  # 0.144
  assert scaling_model.round_seconds(MODEL, 4, 10, 1) == pytest.approx(1.7)
  assert scaling_model.bottleneck(MODEL, 4, 10, 1) == "compute"
  # 100 clients on 64 workers at 1 Gbit/s: (1e8 + 1.28e8) B = 1.824 s.
  assert scaling_model.round_seconds(MODEL, 64, 100, 1) == pytest.approx(
      0.2 + 1.824)
  assert scaling_model.bottleneck(MODEL, 64, 100, 1) == "network"
  assert scaling_model.round_seconds(MODEL, 64, 100, 10) == pytest.approx(
      0.2 + 1.0)  # driver 1.0 = compute 0.5 x 2 > network 0.1824


def test_bottleneck_clients():
  # 64 workers at 1 Gbit/s: up to 64 clients each busy worker costs 3 MB
  # (its client's 1 MB and its own 2 MB), 0.024 s at 1 Gbit/s; 21 of them
  # (0.504 s) outlast one client's training (0.5 s). Idle workers are sent
  # nothing.
  assert scaling_model.bottleneck_clients(MODEL, 64, 1) == (21, "network")
  terms = scaling_model.round_terms(MODEL, 64, 1, 1)
  assert terms["network"] == pytest.approx(3e6 * 8 / 1e9)
  # 4 workers at 10 Gbit/s: 0.01 c and 0.0008 c + 0.0064 never pass
  # 0.5 ceil(c / 4).
  assert scaling_model.bottleneck_clients(MODEL, 4, 10, 1000) is None
  # No bytes: the driver (0.1 s a client) passes 0.5 s at the 6th client,
  # while 16 workers still train one client each.
  driver_bound = ScalingModel(driver_s_per_client=0.1,
                              worker_s_per_client=0.5, bytes_per_client=0)
  assert scaling_model.bottleneck_clients(driver_bound, 16, 1) == (6,
                                                                   "driver")


def test_fit_bytes_recovers_per_client_and_per_worker():
  points = [(w, c, c * 1e6 + w * 2e6) for w in (1, 2) for c in (10, 20)]
  per_client, per_worker = scaling_model.fit_bytes(points)
  assert per_client == pytest.approx(1e6)
  assert per_worker == pytest.approx(2e6)
  # Fewer bytes with more workers (noise) fits -1e6 per worker: clipped.
  assert scaling_model.fit_bytes([(1, 10, 1.1e7), (2, 10, 1e7)]) == (
      pytest.approx(1.2e6), 0.0)


def point(workers, clients, **extra):
  return {"label": "1 worker" if workers == 1 else "2 workers",
          "workers": workers, "clients": clients, "examples_per_client": 60,
          "examples": 60.0 * clients, "median_s": 11.0, "best_s": 10.0,
          "driver_cpu": 2.0, "worker_cpu": 8.0, **extra}


def test_fitted_model_without_byte_counts():
  model, how = scaling.fitted_model([
      point(1, 20, driver_cpu=1.0), point(1, 100, upload_bytes=5e8,
                                          download_bytes=3e8),
      point(2, 100)])
  # The two-worker point's driver CPU per client: 2 s / 100.
  assert model.driver_s_per_client == pytest.approx(0.02)
  assert model.worker_s_per_client == pytest.approx(0.08)
  # One client count with two workers (100): 11 s measured, max(100 x
  # 0.02 s of driver, 50 x 0.08 s of compute) explained; no serial term.
  assert model.latency_s == pytest.approx(7.0)
  assert model.serial_s_per_client == 0
  alone, _ = scaling.fitted_model([point(1, 100)])
  assert alone.latency_s == pytest.approx(3.0)  # 11 s - max(2 s, 8 s)
  # 60 examples x (784 x 4 + 8) B, and (5e8 + 3e8) / 100 of the model.
  assert model.bytes_per_client == pytest.approx(60 * 3144 + 8e6)
  assert model.bytes_per_worker == 0
  assert "assumed" in how


def test_fitted_model_fits_a_line_through_the_points_with_two_workers():
  model, _ = scaling.fitted_model([
      point(1, 100), point(2, 20, median_s=25.0),
      point(2, 100, median_s=105.0)])
  # Driver 2 s / 100 clients (the two-worker point with the most); left
  # unexplained: 25 - max(0.4, 10 x 0.08) = 24.2 s at 20 clients, 105 -
  # max(2, 50 x 0.08) = 101 s at 100: a line of 76.8 / 80 = 0.96 s per
  # client through 24.2 - 20 x 0.96 = 5 s.
  assert model.driver_s_per_client == pytest.approx(0.02)
  assert model.serial_s_per_client == pytest.approx(0.96)
  assert model.latency_s == pytest.approx(5.0)
  assert model.worker_s_per_client == pytest.approx(0.08)
  assert scaling_model.round_seconds(model, 2, 100, float("inf")) == (
      pytest.approx(105.0))


def test_fitted_model_from_byte_counts():
  points = [point(w, c, **{"bytes/sent_to_workers": c * 1e6,
                           "bytes/received_from_workers": w * 2e6,
                           "bytes/computations_to_workers": 5e5})
            for w in (1, 2) for c in (20, 100)]
  model, how = scaling.fitted_model(points)
  assert model.bytes_per_client == pytest.approx(1e6)
  assert model.bytes_per_worker == pytest.approx(2e6)
  assert "fitted" in how
  # The computation's bytes are part of the sent ones, not added again.
  assert scaling.round_bytes(points[0]) == pytest.approx(2e7 + 2e6)
  assert scaling.round_bytes({"median_s": 1.0}) is None


def test_expected_round_bytes_is_the_weights_per_worker():
  # 6 MB model, 100 clients of 60 examples (6 batches of 10 indices) over
  # 2 workers: weights down and one sum up per worker, the computation,
  # and 100 index matrices of 240 bytes.
  p = point(2, 100, download_bytes=6e8, upload_bytes=6e8,
            **{"bytes/computations_to_workers": 1e6})
  assert scaling.expected_round_bytes(p) == pytest.approx(
      2 * 6e6 * 2 + 1e6 + 100 * 240)


def test_scaling_markdown_states_model_points_and_projection():
  rounds = [{"seconds": s, "driver_cpu": 2.0, "worker_cpu": 8.0,
             "examples": 6000.0} for s in (11.0, 12.0)]
  text = scaling.scaling_markdown(
      [{"clients": 100, "examples_per_client": 60, "model": "cnn",
        "rounds": {"1 worker": rounds, "2 workers": rounds}}], "- Machine: m")
  assert "Round time = latency + serial + max(driver, compute, network)" in (
      text)
  assert "| 1 worker | 100 x 60 | 11.50 |" in text
  for workers in (4, 16, 64):
    assert f"| {workers} | 1 Gbit/s |" in text
    assert f"| {workers} | 10 Gbit/s |" in text


def test_summarize_takes_medians():
  s = scaling.summarize([{"seconds": 3.0, "driver_cpu": 1.0},
                         {"seconds": 1.0, "driver_cpu": 3.0},
                         {"seconds": 2.0, "driver_cpu": 2.0}])
  assert s == {"best_s": 1.0, "median_s": 2.0, "driver_cpu": 2.0}


def test_stop_workers_ends_the_whole_group(tmp_path):
  pid_file = tmp_path / "background.pid"
  group = subprocess.Popen(
      ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; sleep 60"],
      start_new_session=True)
  while not pid_file.exists() or not pid_file.read_text().strip():
    time.sleep(0.05)
  scaling.stop_workers([group], grace_s=2)
  assert group.poll() is not None
  time.sleep(0.2)
  assert not running(int(pid_file.read_text()))


def test_pin_threads_pins_this_process():
  before = os.sched_getaffinity(0)
  try:
    scaling.pin_threads([min(before)])
    assert os.sched_getaffinity(0) == {min(before)}
  finally:
    scaling.pin_threads(sorted(before))
  assert os.sched_getaffinity(0) == before


def test_markdown_is_written_again_from_the_measured_rounds(tmp_path):
  rounds = [{"seconds": s, "driver_cpu": 2.0, "worker_cpu": 8.0,
             "examples": 6000.0} for s in (11.0, 12.0)]
  measurements = [{"clients": 100, "examples_per_client": 60,
                   "model": "cnn",
                   "rounds": {"1 worker": rounds, "2 workers": rounds}}]
  json_path, md_path = tmp_path / "scaling.json", tmp_path / "scaling.md"
  json_path.write_text(json.dumps(measurements))
  md_path.write_text(scaling.scaling_markdown(
      measurements, "- Machine: m\n- Commit: c") + "\n")
  first = md_path.read_text()
  for _ in range(2):  # a second rendering does not repeat the note
    scaling.render_again(str(json_path), str(md_path), "Model rendered "
                         "again from scaling.json at commit d.")
  text = md_path.read_text()
  assert text.count("- Model rendered again") == 1
  assert "- Machine: m\n- Commit: c\n- Model rendered again" in text
  assert text.split("## The model", 1)[1] == first.split(
      "## The model", 1)[1]
