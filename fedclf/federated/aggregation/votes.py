"""What the robust aggregators share: the reporting clients' updates as
one stacked tensor per weight, without the dropped clients."""

from __future__ import annotations

from typing import List, Sequence

import tensorflow as tf

Tensors = List[tf.Tensor]


def active_stacks(deltas: Sequence[Tensors], weights: Sequence) -> Tensors:
  """Per weight tensor, the updates of the clients with weight > 0 stacked
  on a new first axis ([n_active, ...]). A dropped client (weight 0: its
  training raised or became non-finite) sent a zero update that would
  otherwise count as a vote for "no change"."""
  keep = tf.cast(tf.stack([tf.cast(w, tf.float32) for w in weights]),
                 tf.float32) > 0
  return [tf.boolean_mask(tf.stack([tf.cast(d[i], tf.float32)
                                    for d in deltas]), keep)
          for i in range(len(deltas[0]))]


def count(stacks: Tensors) -> int:
  """How many clients `active_stacks` kept (run eagerly, on the driver)."""
  return int(stacks[0].shape[0])
