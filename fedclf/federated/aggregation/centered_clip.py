"""`centered_clip`: centered clipping (Karimireddy, He & Jaggi 2021,
"Learning from History for Byzantine Robust Optimization", ICML).

Starting from the previous round's aggregate v (zeros at round 1), each of
`centered_clip_iterations` steps moves v by the mean of the updates'
differences to it, each difference clipped to L2 norm
`centered_clip_radius`:

  v <- v + (1/n) sum_i (d_i - v) min(1, tau / |d_i - v|)

An outlier moves v by at most tau / n per step however far it is, and the
honest clients' agreement from round to round is what v starts from: the
state the rule keeps (`ServerState.aggregator`), so it has no TFF form and
runs on the driver on the tff backend. Dropped clients (weight 0) do not
vote; the rule is unweighted like the other robust ones.
"""

from __future__ import annotations

import dataclasses
from typing import List, Sequence

import numpy as np
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated.aggregation.votes import active_stacks
from fedclf.federated.aggregators import Aggregator
from fedclf.registry import AGGREGATORS

Tensors = List[tf.Tensor]


@dataclasses.dataclass(frozen=True)
class CenteredClipParams:
  centered_clip_radius: float = dataclasses.field(
      default=1.0, metadata={"help": "L2 norm tau each update's difference "
                                     "to the running aggregate is clipped "
                                     "to."})
  centered_clip_iterations: int = dataclasses.field(
      default=1, metadata={"help": "Clipping steps per round (the paper's "
                                   "L; 1 suffices from the previous "
                                   "aggregate)."})

  def validate(self) -> None:
    if not self.centered_clip_radius > 0:
      raise UserError("centered_clip_radius must be > 0, got "
                      f"{self.centered_clip_radius}")
    if self.centered_clip_iterations < 1:
      raise UserError("centered_clip_iterations must be >= 1, got "
                      f"{self.centered_clip_iterations}")


def centered_clip_step(stacks: Tensors, center: Tensors,
                       radius: float) -> Tensors:
  """One step: `center` moved by the mean of the clipped differences of the
  stacked updates ([n, ...] per weight) to it; unchanged when n is 0."""
  diffs = [s - c[tf.newaxis] for s, c in zip(stacks, center)]
  sq = tf.add_n([tf.reduce_sum(tf.reshape(tf.square(d), [tf.shape(d)[0],
                                                         -1]), axis=1)
                 for d in diffs])
  scale = tf.minimum(1.0, radius / tf.maximum(tf.sqrt(sq), 1e-12))
  n = tf.maximum(tf.cast(tf.shape(sq)[0], tf.float32), 1.0)
  out = []
  for c, d in zip(center, diffs):
    s = tf.reshape(scale, [-1] + [1] * (len(d.shape) - 1))
    out.append(c + tf.reduce_sum(s * d, axis=0) / n)
  return out


class CenteredClip(Aggregator):
  """Centered clipping around the previous round's aggregate."""

  name = "centered_clip"
  has_tff_form = False

  def __init__(self, radius: float, iterations: int):
    self.radius = float(radius)
    self.iterations = int(iterations)

  def initial_state(self, trainable: Sequence[np.ndarray]
                    ) -> List[np.ndarray]:
    return [np.zeros(np.shape(w), np.float32) for w in trainable]

  def combine_with_state(self, deltas, weights, expected_clients, seed,
                         state):
    del expected_clients, seed  # Unused: deterministic and unweighted.
    stacks = active_stacks(deltas, weights)
    center = [tf.constant(v, tf.float32) for v in state]
    for _ in range(self.iterations):
      center = centered_clip_step(stacks, center, self.radius)
    return center, [c.numpy() for c in center]

  def combine(self, deltas, weights, expected_clients, seed):
    """Centered clipping from zero (one round without history)."""
    zeros = [np.zeros(np.shape(t), np.float32) for t in deltas[0]]
    return self.combine_with_state(deltas, weights, expected_clients, seed,
                                   zeros)[0]

  def tff_factory(self, expected_clients):
    del expected_clients  # Unused: stateful, combined on the driver.
    return None


@AGGREGATORS.register("centered_clip", params=CenteredClipParams)
def centered_clip(params: CenteredClipParams) -> Aggregator:
  """Centered clipping (Karimireddy et al. 2021) around the last aggregate."""
  return CenteredClip(params.centered_clip_radius,
                      params.centered_clip_iterations)
