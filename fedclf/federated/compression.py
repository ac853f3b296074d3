"""Compressed uploads: a codec around any algorithm's client work.

`CompressedUpload` wraps an algorithm's own `ClientWork` (composition: the
inner work trains as always); its model delta is then encoded and decoded
as the server would receive it, and `upload_bytes` is the encoded size.
Only the model delta is compressed: non-trainable weights and an
algorithm's extra upload (SCAFFOLD's control-variate step) stay dense
float32 and are counted so.

- topk: per tensor, the k = ceil(fraction * n) entries of largest magnitude
  (at least one) with **error feedback** (Stich et al. 2018; Karimireddy
  et al. 2019): what was not sent is kept on the client (client state,
  checkpointed after the inner work's own) and added to its next delta.
  Per tensor rather than over the whole update, so that every layer
  (biases, the small last layer) moves every round and k is known per
  tensor from its shape. Bytes: k x (4-byte float32 value + an index of
  ceil(bits(n - 1) / 8) bytes, the fewest whole bytes that address n
  entries), never more than the dense tensor.
- quantize: stochastic uniform quantization (QSGD-style, Alistarh et al.
  2017) on 2^b - 1 steps between the tensor's min and max, rounding up with
  probability equal to the remainder, so the decoded delta is unbiased; the
  randomness is seeded by the client's round seed (stateless). Bytes:
  ceil(n x b / 8) + 8 (the min and max as two float32) per tensor.

The same codec runs on both backends (it is part of the client work that
`tff.tensorflow.computation` wraps), so their results agree.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Sequence

import numpy as np
import tensorflow as tf

from fedclf.federated.client_work import ClientOutput
from fedclf.federated.client_work import ClientWork
from fedclf.federated.client_work import WrappedWork
from fedclf.federated.communication import dense_bytes
from fedclf.federated.config import CompressionConfig

Tensors = List[tf.Tensor]


def topk_count(n: int, fraction: float) -> int:
  """Entries top-k keeps of a tensor of n: ceil(fraction * n), at least 1
  (the small epsilon keeps 0.1 * 30 from rounding up to 4)."""
  return max(1, min(n, math.ceil(fraction * n - 1e-9)))


def index_bytes(n: int) -> int:
  """Bytes of one index into n entries: the fewest whole bytes (>= 1)."""
  return max(1, math.ceil((n - 1).bit_length() / 8))


def topk_bytes(n: int, fraction: float) -> int:
  """Upload bytes of one top-k tensor of n entries: k values and indices,
  or the dense tensor when that is smaller."""
  return min(topk_count(n, fraction) * (4 + index_bytes(n)), 4 * n)


def quantized_bytes(n: int, bits: int) -> int:
  """Upload bytes of one quantized tensor: n b-bit codes and two float32."""
  return math.ceil(n * bits / 8) + 8


def top_k(tensor: tf.Tensor, fraction: float) -> tf.Tensor:
  """`tensor` with all but its k largest-magnitude entries zeroed (ties:
  the lower index is kept)."""
  n = tensor.shape.num_elements()
  flat = tf.reshape(tensor, [-1])
  _, index = tf.math.top_k(tf.abs(flat), k=topk_count(n, fraction))
  kept = tf.scatter_nd(index[:, None], tf.gather(flat, index), [n])
  return tf.reshape(kept, tensor.shape)


def stochastic_quantize(tensor: tf.Tensor, bits: int,
                        seed: tf.Tensor) -> tf.Tensor:
  """`tensor` rounded stochastically to one of 2^bits levels evenly spaced
  between its min and max: unbiased, exact at the levels; `seed` ([2]
  int64) fixes the rounding."""
  low, high = tf.reduce_min(tensor), tf.reduce_max(tensor)
  levels = float(2 ** bits - 1)
  step = (high - low) / levels
  flat = step > 0  # a constant tensor is sent as its min alone
  scaled = (tensor - low) / tf.where(flat, step, 1.0)
  floor = tf.floor(scaled)
  up = tf.cast(tf.random.stateless_uniform(tf.shape(tensor), seed) <
               scaled - floor, tensor.dtype)
  code = tf.clip_by_value(floor + up, 0.0, levels)
  return tf.where(flat, low + code * step, tensor)


class CompressedUpload(WrappedWork):
  """An algorithm's client work whose model delta is uploaded through a
  codec (see the module docstring); a `ClientWork`."""

  def __init__(self, inner: ClientWork, config: CompressionConfig):
    super().__init__(inner)
    self.config = config
    self.error_feedback = config.method == "topk"
    self.stateful = bool(inner.stateful or self.error_feedback)

  def initial_client_state(self, trainable: Sequence[tf.Tensor]) -> Tensors:
    """The inner work's state, then (top-k) one residual per weight."""
    state = list(self.inner.initial_client_state(trainable))
    if self.error_feedback:
      state += [tf.zeros_like(w) for w in trainable]
    return state

  def initial_server_extra(self, trainable):
    return self.inner.initial_server_extra(trainable)

  def update_server_extra(self, extra, mean_extra_delta, participation):
    return self.inner.update_server_extra(extra, mean_extra_delta,
                                          participation)

  def encode_decode(self, delta: Tensors, seed: tf.Tensor) -> Tensors:
    """What the server receives of `delta`."""
    if self.config.method == "topk":
      return [top_k(d, self.config.topk_fraction) for d in delta]
    return [stochastic_quantize(d, self.config.quantize_bits,
                                tf.stack([seed[1] + 7919 * (i + 1), seed[0]]))
            for i, d in enumerate(delta)]

  def delta_bytes(self, delta: Sequence) -> int:
    sizes = [int(np.prod(d.shape)) for d in delta]
    if self.config.method == "topk":
      return sum(topk_bytes(n, self.config.topk_fraction) for n in sizes)
    return sum(quantized_bytes(n, self.config.quantize_bits) for n in sizes)

  def train(self, model, velocity, global_trainable, global_non_trainable,
            batches, num_examples, client_state, server_extra,
            seed) -> ClientOutput:
    """The inner work's training, its delta (plus the residual) encoded."""
    split = len(client_state) - (len(global_trainable)
                                 if self.error_feedback else 0)
    residual = list(client_state[split:])
    out = self.inner.train(model, velocity, global_trainable,
                           global_non_trainable, batches, num_examples,
                           list(client_state[:split]), server_extra, seed)
    target = ([d + r for d, r in zip(out.delta, residual)]
              if self.error_feedback else list(out.delta))
    sent = self.encode_decode(target, seed)
    # A dropped client sends nothing and keeps its residual.
    dropped = out.dropped > 0
    new_residual = [tf.where(dropped, r, t - s)
                    for r, t, s in zip(residual, target, sent)]
    return dataclasses.replace(
        out, delta=[tf.where(dropped, tf.zeros_like(s), s) for s in sent],
        client_state=list(out.client_state) + new_residual,
        upload_bytes=np.int64(self.delta_bytes(out.delta) + dense_bytes(
            list(out.non_trainable) + list(out.extra_delta))))


def with_compression(algorithm, config: CompressionConfig):
  """`algorithm` (an `Algorithm`) with its client work wrapped in the
  codec; unchanged for method "none"."""
  if config.method == "none":
    return algorithm
  return dataclasses.replace(
      algorithm, client_work=CompressedUpload(algorithm.client_work, config))
