"""The gradient-reversal layer of DANN (Ganin et al. 2016, section 3.2).

Forward it is the identity; backward it multiplies the incoming gradient by
-lambda. Put between the encoder and the domain classifier, one backward
pass then trains the domain classifier to tell the domains apart while
pushing the encoder to make them indistinguishable.
"""

from __future__ import annotations

import math
from typing import Union

import tensorflow as tf


@tf.custom_gradient
def _reverse(x: tf.Tensor, scale: tf.Tensor):
  def grad(upstream):
    # lambda is a schedule value, not a parameter: it gets no gradient.
    return -scale * upstream, tf.zeros_like(scale)

  return tf.identity(x), grad


def gradient_reversal(x: tf.Tensor,
                      lambda_: Union[float, tf.Tensor] = 1.0) -> tf.Tensor:
  """Identity on `x`; its gradient is multiplied by -`lambda_`.

  Args:
    x: any float tensor (encoder features).
    lambda_: a scalar (Python number or tensor) >= 0; a tensor lets one
      compiled training step follow DANN's schedule without retracing.

  Returns:
    A tensor equal to `x`.
  """
  x = tf.convert_to_tensor(x)
  scale = tf.cast(tf.convert_to_tensor(lambda_), x.dtype)
  return _reverse(x, scale)


def dann_lambda(progress: float, gamma: float = 10.0,
                maximum: float = 1.0) -> float:
  """DANN's adaptation factor 2 / (1 + exp(-gamma p)) - 1, times `maximum`.

  It rises from 0 at the start (p = 0) towards `maximum`, so the domain
  classifier's noisy early signal does not disturb the encoder while the
  label classifier is still random (Ganin et al. 2016, section 5.2.2).
  """
  p = min(max(float(progress), 0.0), 1.0)
  return float(maximum) * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)
