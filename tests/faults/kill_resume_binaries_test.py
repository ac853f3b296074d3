"""Training binaries killed with SIGKILL after their first checkpoint and
continued with --resume end with the uninterrupted run's results.

Together with the other kill tests every binary is covered, each engine at
the binary level at least once: `simulations.federated` (kill_resume_test:
final checkpoints equal array for array), `simulations.ssl_pretrain`
(resume_rows_test: Ctrl-C past a checkpoint, every metrics row equal), and
here `baselines.centralized` (the epoch driver) and
`simulations.domain_adaptation --mode=federated` (the round loop), every
number of the final summary compared. DANN's and SSL pretraining's
kill-and-resume are also tested in-process (tests/adapt/methods_test.py,
tests/ssl/pretrain_resume_test.py).
"""

import json
import os
import signal
import time

import pytest

from benchmarks.run_numbers import flatten
from tests.binary_batch import start_binary

REAL_DATA = os.environ.get("FEDCLF_DATA_DIR", "")
HAS_DIGIT_DOMAINS = all(os.path.isdir(os.path.join(REAL_DATA, d))
                        for d in ("mnist", "usps"))
TINY_DOMAINS = ["--source=mnist", "--target=usps", "--model=mlp",
                "--train_limit=400", "--target_train_limit=300",
                "--test_limit=200", "--checkpoint_every=1", "--seed=3"]

CASES = {
    "centralized": (["baselines.centralized", "--dataset=digits",
                     "--model=mlp", "--epochs=12", "--batch_size=32",
                     "--lr_schedule=cosine", "--checkpoint_every=1",
                     "--seed=3"], "ckpt-1.index"),
    "domain_adaptation_federated": (["simulations.domain_adaptation",
                                     "--mode=federated", "--method=dann",
                                     "--num_clients=4",
                                     # 40 rounds of ~0.06 s: slack for a
                                     # loaded CI's poll loop to see the
                                     # first checkpoint before the end.
                                     "--clients_per_round=4", "--rounds=40",
                                     "--eval_rounds=20", "--dann_hidden=16",
                                     *TINY_DOMAINS], "round_00001.npz"),
}
NEEDS_DOMAINS = ("domain_adaptation_federated",)


def start(args, out_dir, *extra):
  module, *flags = args
  return start_binary(module, [*flags, f"--out_dir={out_dir}", *extra])


@pytest.mark.parametrize("case", sorted(CASES))
def test_sigkill_then_resume_ends_like_the_uninterrupted_run(tmp_path, case):
  if case in NEEDS_DOMAINS and not HAS_DIGIT_DOMAINS:
    pytest.skip("FEDCLF_DATA_DIR with MNIST and USPS is not set")
  args, first_checkpoint = CASES[case]
  full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
  full = start(args, full_dir)
  killed = start(args, killed_dir)
  marker = killed_dir / "checkpoints" / first_checkpoint
  deadline = time.monotonic() + 400
  while not marker.exists() and killed.poll() is None and (
      time.monotonic() < deadline):
    time.sleep(0.02)
  killed.kill()
  _, err = killed.communicate(timeout=60)
  assert killed.returncode == -signal.SIGKILL, err[-2000:]
  assert not (killed_dir / "summary.json").exists()

  resumed = start(args, killed_dir, "--resume")
  _, err = resumed.communicate(timeout=400)
  assert resumed.returncode == 0, err[-2000:]
  _, err = full.communicate(timeout=400)
  assert full.returncode == 0, err[-2000:]
  want, got = {}, {}
  flatten(json.loads((full_dir / "summary.json").read_text()), "", want)
  flatten(json.loads((killed_dir / "summary.json").read_text()), "", got)
  assert want and got == want
