"""Attacks of malicious clients, applied inside the client computation of
both backends (see `attack_config` for the attacks and their flags).

`attack_output` runs after a client's honest local training, in the
`local` backend's group graph and in the `tff` backend's client
computation, so the streamed FedAvg sum, TFF's aggregators and the driver's
robust ones all see the attacked update. `flip_labels` is the label
flipping attack's data side.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from fedclf.federated.attack_config import AttackConfig
from fedclf.federated.client_work import ClientOutput

# Keeps the noise stream apart from the objective's per-step seeds.
_NOISE_STREAM = 0x5EED


def attacked_delta(delta, malicious, seed, config: AttackConfig):
  """`delta` (a list of tensors) as a client with `malicious` (1.0 or 0.0)
  reports it under `config`'s update attack; `seed` is the client's [2]
  int64 round seed."""
  if not config.on_updates:
    return list(delta)
  m = tf.cast(malicious, tf.float32)
  if config.attack == "sign_flip":
    bad = [-config.attack_scale * d for d in delta]
  elif config.attack == "scaled":
    bad = [config.attack_scale * d for d in delta]
  else:  # gaussian_noise
    seed = tf.cast(seed, tf.int64)
    bad = [tf.random.stateless_normal(
        tf.shape(d), seed=tf.stack([seed[0] + _NOISE_STREAM,
                                    seed[1] * 1009 + i]),
        stddev=config.attack_noise_std, dtype=d.dtype)
           for i, d in enumerate(delta)]
  return [m * b + (1.0 - m) * d for b, d in zip(bad, delta)]


def attack_output(out: ClientOutput, malicious, seed,
                  config: AttackConfig) -> ClientOutput:
  """A client's output with its delta attacked (see `attacked_delta`); a
  dropped client (non-finite training) keeps its zero update."""
  if not config.on_updates:
    return out
  kept = 1.0 - tf.cast(out.dropped, tf.float32)
  delta = [kept * d for d in attacked_delta(out.delta, malicious, seed,
                                            config)]
  return dataclasses.replace(out, delta=delta)


def flip_labels(labels, malicious, num_classes: int):
  """Labels y -> C - 1 - y where `malicious` (label flipping)."""
  flipped = tf.cast(num_classes - 1, labels.dtype) - labels
  return tf.where(tf.cast(malicious, tf.bool), flipped, labels)
