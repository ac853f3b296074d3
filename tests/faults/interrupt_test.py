"""SIGTERM of a `--backend=tff` run piped into `cat`: the run saves a
checkpoint, stops its TFF worker and exits 143, and the pipeline returns (no
leaked worker holds the pipe open). The TFF workers' own signal handlers
pass the signal on to fedclf's (fedclf.process_exit); Ctrl-C takes the same
path (tests/binaries/binaries_test.py sends it to a local-backend run)."""

import signal
import subprocess
import time

import psutil

from tests.binary_batch import start_binary



def start_piped_run(out):
  run = start_binary(
      "simulations.federated",
      ["--dataset=digits", "--model=mlp", "--num_clients=6",
       "--clients_per_round=2", "--rounds=100000", "--checkpoint_every=1000",
       "--per_client_eval=0", "--backend=tff", f"--out_dir={out}"],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=False)
  # `... 2>&1 | cat`: cat ends only once every process holding the pipe
  # (the run and anything it leaked) has exited.
  cat = subprocess.Popen(["cat"], stdin=run.stdout, stdout=subprocess.PIPE)
  run.stdout.close()
  return run, cat


def wait_for_rounds(out, run, rounds=2, timeout_s=500):
  metrics = out / "metrics.jsonl"
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline and run.poll() is None and (
      not metrics.exists() or len(metrics.read_text().splitlines()) < rounds):
    time.sleep(0.2)


def interrupt_and_check(run, cat, out, signum, code, message):
  workers = [p for p in psutil.Process(run.pid).children(recursive=True)
             if "worker_binary" in p.name()]
  assert len(workers) == 1, "the run should own one TFF worker"
  run.send_signal(signum)
  output, _ = cat.communicate(timeout=120)
  assert run.wait(timeout=30) == code, output.decode()[-3000:]
  assert message in output
  assert b"Traceback" not in output, output.decode()[-3000:]
  _, alive = psutil.wait_procs(workers, timeout=10)
  assert not alive, "the TFF worker outlived the run"
  # Saved on the interrupt although --checkpoint_every=1000.
  assert list((out / "checkpoints").glob("round_*.npz"))


def test_sigterm_of_tff_run_checkpoints_stops_worker_and_pipe_returns(
    tmp_path):
  out = tmp_path / "term"
  run, cat = start_piped_run(out)
  try:
    wait_for_rounds(out, run)
    interrupt_and_check(run, cat, out, signal.SIGTERM, 143, b"terminated")
  finally:
    for proc in (run, cat):
      if proc.poll() is None:
        proc.kill()
        proc.wait()
