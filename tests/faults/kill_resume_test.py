"""A federated run killed with SIGKILL mid-run and continued with --resume
ends with exactly the weights of an uninterrupted run, and logs each round
once."""

import json
import signal
import time

import numpy as np

from tests.binary_batch import start_binary

ROUNDS = 20
ARGS = ["--dataset=digits", "--model=mlp", "--num_clients=10",
        "--clients_per_round=4", f"--rounds={ROUNDS}", "--checkpoint_every=1",
        "--eval_every=5", "--per_client_eval=0", "--client_dropout=0.2",
        "--seed=7"]


def start(out_dir, *extra):
  return start_binary("simulations.federated",
                      [*ARGS, f"--out_dir={out_dir}", *extra])


def final_checkpoint(out_dir):
  with np.load(out_dir / "checkpoints" / f"round_{ROUNDS:05d}.npz") as data:
    return {k: data[k] for k in data.files}


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
  full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
  # Both start together (the reference run overlaps the one to be killed).
  full = start(full_dir)
  killed = start(killed_dir)
  third = killed_dir / "checkpoints" / "round_00003.npz"
  deadline = time.monotonic() + 400
  while not third.exists() and killed.poll() is None and (
      time.monotonic() < deadline):
    time.sleep(0.02)
  killed.kill()
  _, err = killed.communicate(timeout=60)
  assert killed.returncode == -signal.SIGKILL, err[-2000:]
  saved = sorted(p.name for p in (killed_dir / "checkpoints").glob(
      "round_*.npz"))
  assert saved and saved[-1] < f"round_{ROUNDS:05d}.npz", saved

  resumed = start(killed_dir, "--resume")
  _, err = resumed.communicate(timeout=400)
  assert resumed.returncode == 0, err[-2000:]
  _, err = full.communicate(timeout=400)
  assert full.returncode == 0, err[-2000:]

  reference, result = final_checkpoint(full_dir), final_checkpoint(killed_dir)
  assert reference.keys() == result.keys()
  for key in reference:
    np.testing.assert_array_equal(reference[key], result[key], err_msg=key)
  rounds = [json.loads(line)["round"] for line in
            (killed_dir / "metrics.jsonl").read_text().splitlines()]
  assert rounds == list(range(1, ROUNDS + 1))
  summary = json.loads((killed_dir / "summary.json").read_text())
  assert summary["rounds_run"] == ROUNDS
  assert summary["final_test_accuracy"] == json.loads(
      (full_dir / "summary.json").read_text())["final_test_accuracy"]
