"""`simulations.ssl_pretrain` stopped with Ctrl-C (SIGINT) after epochs it
logged but did not checkpoint, then continued with --resume, ends with
exactly the metrics.jsonl rows of an uninterrupted run: each stage's epoch
once, every stage's rows in the uninterrupted order."""

import json
import signal
import time

import tensorflow as tf

from tests.binary_batch import start_binary

EPOCHS = 15
CHECKPOINT_EVERY = 5
# Digits-sized and small, yet about 0.15 s a pretraining epoch: the Ctrl-C
# below lands several epochs before the second checkpoint is due.
ARGS = ["--dataset=digits", "--model=mlp", "--width_multiplier=0.5",
        "--method=simclr", "--projection_dim=16", "--hidden_dim=32",
        f"--epochs={EPOCHS}", "--batch_size=16",
        f"--checkpoint_every={CHECKPOINT_EVERY}", "--probe_epochs=2",
        "--label_fractions=0.1", "--finetune_epochs=1",
        "--embedding_points=0", "--seed=3"]


def start(out_dir, *extra):
  return start_binary("simulations.ssl_pretrain",
                      [*ARGS, f"--out_dir={out_dir}", *extra])


def rows(out_dir):
  """metrics.jsonl's whole rows (a line being written may be cut)."""
  path = out_dir / "metrics.jsonl"
  if not path.exists():
    return []
  parsed = []
  for line in path.read_text().splitlines():
    try:
      parsed.append(json.loads(line))
    except json.JSONDecodeError:
      break
  return parsed


def pretraining_epochs(out_dir):
  return [r["epoch"] for r in rows(out_dir) if "ssl_epoch_seconds" in r]


def without_clock(out_dir):
  return [{k: v for k, v in row.items()
           if k != "wall_seconds" and not k.endswith("epoch_seconds")}
          for row in rows(out_dir)]


def test_ctrl_c_then_resume_logs_the_uninterrupted_rows(tmp_path):
  full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
  full = start(full_dir)
  cut = start(cut_dir)
  first = cut_dir / "checkpoints" / f"ckpt-{CHECKPOINT_EVERY}.index"
  deadline = time.monotonic() + 400
  # After the first checkpoint, and after the next epoch's row: that row
  # is logged but not checkpointed.
  while (not first.exists() or max(pretraining_epochs(cut_dir), default=0)
         <= CHECKPOINT_EVERY) and cut.poll() is None and (
             time.monotonic() < deadline):
    time.sleep(0.01)
  cut.send_signal(signal.SIGINT)
  _, err = cut.communicate(timeout=120)
  assert cut.returncode == 130, err[-2000:]
  latest = tf.train.latest_checkpoint(str(cut_dir / "checkpoints"))
  logged = pretraining_epochs(cut_dir)
  # The case under test: rows past the checkpoint the resumed run starts
  # from.
  assert latest.endswith(f"ckpt-{CHECKPOINT_EVERY}"), latest
  assert max(logged) > CHECKPOINT_EVERY, logged

  resumed = start(cut_dir, "--resume")
  _, err = resumed.communicate(timeout=400)
  assert resumed.returncode == 0, err[-2000:]
  _, err = full.communicate(timeout=400)
  assert full.returncode == 0, err[-2000:]

  assert pretraining_epochs(cut_dir) == list(range(1, EPOCHS + 1))
  reference = without_clock(full_dir)
  assert without_clock(cut_dir) == reference
  stages = {tuple(sorted(k for k in row if k.endswith("epoch_seconds")))
            for row in rows(full_dir)}
  assert len(stages) == 6  # ssl, two probes, fine-tuning, scratch, final
