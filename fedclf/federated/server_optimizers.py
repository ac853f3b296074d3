"""Server optimizers applied to the aggregated client delta.

Pure TensorFlow on lists of tensors, so the `local` backend needs no TFF
import (which costs ~50 s). The update rules are those of
`tff.learning.optimizers` (build_sgdm, build_adam, build_yogi,
build_adagrad); the `tff` backend uses TFF's own optimizers and
tests/federated/backend_parity_test.py checks that both agree.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import tensorflow as tf

from fedclf.federated.config import ServerOptimizerConfig

Tensors = List[tf.Tensor]
State = Dict[str, object]


def initialize(config: ServerOptimizerConfig, weights: Tensors) -> State:
  """The optimizer state for `weights` (only tensors, so it checkpoints)."""
  zeros = [tf.zeros_like(w) for w in weights]
  if config.name == "sgd":
    return {}
  if config.name == "momentum":
    return {"accumulator": zeros}
  initial = [tf.fill(tf.shape(w), tf.cast(config.initial_accumulator,
                                          w.dtype)) for w in weights]
  if config.name == "adagrad":
    return {"preconditioner": initial}
  # Adam's second moment starts at zero (as in tff.learning); Yogi's at
  # `initial_accumulator`.
  return {"step": tf.constant(0, tf.int64), "accumulator": zeros,
          "preconditioner": zeros if config.name == "adam" else initial}


def apply(config: ServerOptimizerConfig, state: State, weights: Tensors,
          gradients: Tensors) -> Tuple[State, Tensors]:
  """One server step: returns (new state, new weights)."""
  lr = config.learning_rate
  if config.name == "sgd":
    return state, [w - lr * g for w, g in zip(weights, gradients)]
  if config.name == "momentum":
    acc = [config.momentum * a + g
           for a, g in zip(state["accumulator"], gradients)]
    return {"accumulator": acc}, [w - lr * a for w, a in zip(weights, acc)]
  if config.name == "adagrad":
    pre = [p + tf.square(g) for p, g in zip(state["preconditioner"],
                                           gradients)]
    new = [w - lr * g / tf.sqrt(p + config.epsilon)
           for w, g, p in zip(weights, gradients, pre)]
    return {"preconditioner": pre}, new
  step = state["step"] + 1
  t = tf.cast(step, tf.float32)
  b1, b2 = config.beta_1, config.beta_2
  normalized_lr = lr * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
  acc, pre, new = [], [], []
  for w, a, p, g in zip(weights, state["accumulator"], state["preconditioner"],
                        gradients):
    a = a + (g - a) * (1.0 - b1)
    g2 = tf.square(g)
    if config.name == "adam":
      p = p + (g2 - p) * (1.0 - b2)
    else:  # yogi: the preconditioner moves by a signed, bounded step
      p = p + (1.0 - b2) * tf.sign(g2 - p) * g2
    acc.append(a)
    pre.append(p)
    new.append(w - normalized_lr * a / (tf.sqrt(p) + config.epsilon))
  return {"step": step, "accumulator": acc, "preconditioner": pre}, new
