"""The kill-and-resume check the adaptation methods' tests share."""

import tensorflow as tf

from fedclf.adapt import run_adaptation


def full_and_resumed(config, tmp_path, method: str):
  """(summary of an uninterrupted 2-epoch run, summary of the same run
  killed after epoch 1 and resumed): the caller compares them."""
  full = run_adaptation(config, str(tmp_path / "full"), {})
  cut = tmp_path / "cut"
  run_adaptation(config, str(cut), {})
  # Pretend the run was killed after epoch 1: drop epoch 2's checkpoint.
  ckpt_dir = cut / "checkpoints" / method
  for path in ckpt_dir.glob("ckpt-2*"):
    path.unlink()
  tf.compat.v1.train.update_checkpoint_state(str(ckpt_dir),
                                             str(ckpt_dir / "ckpt-1"))
  return full, run_adaptation(config, str(cut), {}, resume=True)
