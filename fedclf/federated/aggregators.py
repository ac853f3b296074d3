"""How client updates are combined: pluggable parts of an `Algorithm`.

An `Aggregator` combines the reporting clients' model deltas into the one
the server optimizer applies. `combine` (pure TensorFlow) is what the
`local` backend runs; `tff_factory` returns the `tff.aggregators` factory the
`tff` backend uses for the same rule (None: the rule has no TFF form, and
the `tff` backend returns the updates to the driver, which runs `combine`).
A plugin may subclass it, e.g. a robust median (examples/plugin_fedmedian);
the built-in choosable ones are in `fedclf.federated.aggregation`.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import tensorflow as tf

Tensors = List[tf.Tensor]


def global_norm(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
  return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(t)) for t in tensors]))


def weighted_mean(values: Sequence[Sequence[tf.Tensor]],
                  weights: Sequence) -> Tensors:
  if not values or not values[0]:
    return []
  w = tf.cast(tf.stack(weights), tf.float32)
  total = tf.reduce_sum(w)
  return [
      tf.add_n([wi * v[i] for wi, v in zip(tf.unstack(w), values)]) / total
      for i in range(len(values[0]))
  ]


class Aggregator:
  """Example-weighted mean (FedAvg's aggregation)."""

  name = "weighted_mean"
  has_tff_form = True  # False: tff_factory returns None (driver combines)
  weighted = True  # the tff factory takes client weights
  differentially_private = False

  def combine(self, deltas: Sequence[Tensors], weights: Sequence,
              expected_clients: int, seed: Tuple[int, int]) -> Tensors:
    """The combined delta. `weights` are 0 for dropped (non-finite)
    clients; `expected_clients` is the configured clients per round and
    `seed` seeds any noise (stateless)."""
    del expected_clients, seed  # Unused.
    return weighted_mean(deltas, weights)

  def tff_factory(self, expected_clients: int):
    """The equivalent tff.aggregators factory, or None."""
    del expected_clients  # Unused.
    import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
    return tff.aggregators.MeanFactory()

  def initial_state(self, trainable: Sequence[np.ndarray]) -> List[np.ndarray]:
    """The state this rule carries from round to round (kept in
    `ServerState.aggregator` and checkpointed); none by default. A rule
    with state has no TFF form: it runs on the driver on the tff backend."""
    del trainable  # Unused.
    return []

  def combine_with_state(self, deltas: Sequence[Tensors], weights: Sequence,
                         expected_clients: int, seed: Tuple[int, int],
                         state: Sequence[np.ndarray]
                         ) -> Tuple[Tensors, List[np.ndarray]]:
    """(combined delta, next state): `combine`, the state passed through,
    unless a stateful rule overrides it."""
    return (self.combine(deltas, weights, expected_clients, seed),
            list(state))


class DpGaussian(Aggregator):
  """User-level DP (McMahan et al. 2018): each update clipped to L2 norm
  `clip`, Gaussian noise of std `noise_multiplier * clip` on the sum, and a
  fixed denominator (the expected clients per round), so one client's
  influence stays bounded. On TFF: DifferentiallyPrivateFactory."""

  name = "dp_gaussian"
  weighted = False
  differentially_private = True

  def __init__(self, clip: float, noise_multiplier: float):
    self.clip = float(clip)
    self.noise_multiplier = float(noise_multiplier)

  def combine(self, deltas, weights, expected_clients, seed):
    clipped = []
    for delta, w in zip(deltas, weights):
      scale = tf.minimum(1.0, self.clip / tf.maximum(global_norm(delta),
                                                     1e-12))
      # A dropped client (weight 0) sent a zero update; it stays zero.
      clipped.append([scale * t * tf.cast(w > 0, tf.float32) for t in delta])
    out = []
    for i in range(len(deltas[0])):
      total = tf.add_n([c[i] for c in clipped])
      noise = tf.random.stateless_normal(
          tf.shape(total), seed=[seed[0], seed[1] * 1009 + i],
          stddev=self.noise_multiplier * self.clip)
      out.append((total + noise) / float(expected_clients))
    return out

  def tff_factory(self, expected_clients):
    import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
    return tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
        noise_multiplier=self.noise_multiplier,
        clients_per_round=float(expected_clients), clip=self.clip)
