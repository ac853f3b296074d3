"""Ctrl-C (SIGINT) of a `--backend=tff` run piped into `cat`: the run saves
a checkpoint, stops its TFF worker and exits 130, and the pipeline returns
(no leaked worker holds the pipe open)."""

import os
import signal
import subprocess
import sys
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_sigint_of_tff_run_checkpoints_stops_worker_and_pipe_returns(
    tmp_path):
  out = tmp_path / "run"
  run = subprocess.Popen(
      [sys.executable, "-m", "simulations.federated", "--dataset=digits",
       "--model=mlp", "--num_clients=6", "--clients_per_round=2",
       "--rounds=100000", "--checkpoint_every=1000", "--per_client_eval=0",
       "--backend=tff", f"--out_dir={out}"],
      cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  # `... 2>&1 | cat`: cat ends only once every process holding the pipe
  # (the run and anything it leaked) has exited.
  cat = subprocess.Popen(["cat"], stdin=run.stdout, stdout=subprocess.PIPE)
  run.stdout.close()
  workers = []
  try:
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 500
    while time.monotonic() < deadline and run.poll() is None and (
        not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
      time.sleep(0.2)
    workers = [p for p in psutil.Process(run.pid).children(recursive=True)
               if "worker_binary" in p.name()]
    assert len(workers) == 1, "the run should own one TFF worker"
    run.send_signal(signal.SIGINT)
    output, _ = cat.communicate(timeout=120)
    assert run.wait(timeout=30) == 130, output.decode()[-3000:]
  finally:
    for proc in (run, cat):
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  assert b"interrupted" in output
  _, alive = psutil.wait_procs(workers, timeout=10)
  assert not alive, "the TFF worker outlived the run"
  # Saved on Ctrl-C although --checkpoint_every=1000.
  assert list((out / "checkpoints").glob("round_*.npz"))
