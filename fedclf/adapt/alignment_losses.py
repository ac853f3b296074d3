"""The losses of the adversarial adaptation methods, as pure functions.

CDAN (Long et al. 2018, "Conditional Adversarial Domain Adaptation"): the
domain discriminator reads the multilinear map of the features and the
class probabilities (their outer product, or a randomized approximation of
it when the product is too long), and with entropy conditioning (CDAN+E)
each example's discriminator loss is weighted by 1 + exp(-H(p)), so that
confident predictions weigh more.

MDD (Zhang et al. 2019, "Bridging Theory and Algorithm for Domain
Adaptation"): an auxiliary classifier f' is trained to agree with the main
classifier f on the source and to disagree with it on the target; the
encoder, through the gradient reversal, to defeat it. `mdd_disparity` is
f''s objective.

Every function takes logits or probabilities as tensors and returns
tensors, with no model or optimizer inside, so the unit tests compare them
with numpy on tiny examples.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

# log(1 - p) of MDD's target term is clipped here (p -> 1 would be -inf).
_MDD_EPSILON = 1e-6


def multilinear_map(features: tf.Tensor, probs: tf.Tensor) -> tf.Tensor:
  """CDAN's map f (x) g: the flattened outer product, [n, d_f * d_g]."""
  outer = features[:, :, None] * probs[:, None, :]
  return tf.reshape(outer, [-1, features.shape[-1] * probs.shape[-1]])


def random_projections(feature_dim: int, num_classes: int, output_dim: int,
                       seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """The fixed Gaussian matrices R_f [d_f, d], R_g [c, d] of CDAN's
  randomized multilinear map (drawn once from `seed`, never trained)."""
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((feature_dim, output_dim)).astype(np.float32),
          rng.standard_normal((num_classes, output_dim)).astype(np.float32))


def randomized_multilinear_map(features: tf.Tensor, probs: tf.Tensor,
                               r_features: tf.Tensor,
                               r_probs: tf.Tensor) -> tf.Tensor:
  """(f R_f) * (g R_g) / sqrt(d): an unbiased estimate of the inner
  products of the full map with d columns instead of d_f * c."""
  output_dim = int(r_features.shape[-1])
  return (tf.matmul(features, r_features) * tf.matmul(probs, r_probs) /
          math.sqrt(output_dim))


def entropy(probs: tf.Tensor) -> tf.Tensor:
  """Each row's Shannon entropy (nats); 0 log 0 = 0."""
  return -tf.reduce_sum(
      tf.math.multiply_no_nan(tf.math.log(probs), probs), axis=-1)


def entropy_weights(probs: tf.Tensor, num_source: tf.Tensor) -> tf.Tensor:
  """CDAN+E's weights 1 + exp(-H(p)), normalized to sum to 1 within each
  domain (the first `num_source` rows are source), so that both domains
  count equally whatever the confidence of either."""
  weights = 1.0 + tf.exp(-entropy(probs))
  source, target = weights[:num_source], weights[num_source:]
  return tf.concat([source / tf.reduce_sum(source),
                    target / tf.reduce_sum(target)], 0)


def weighted_domain_loss(logits: tf.Tensor, domain_labels: tf.Tensor,
                         weights: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Binary cross-entropy of one-logit domain predictions (label 1:
  target), its weighted mean when `weights` are given (the plain mean
  otherwise)."""
  losses = tf.nn.sigmoid_cross_entropy_with_logits(domain_labels, logits)
  if weights is None:
    return tf.reduce_mean(losses)
  return tf.reduce_sum(weights * losses) / tf.reduce_sum(weights)


def domain_labels(total: tf.Tensor, num_source: tf.Tensor) -> tf.Tensor:
  """0. for the first `num_source` of `total` rows (source), 1. after."""
  return tf.concat([tf.zeros([num_source]), tf.ones([total - num_source])], 0)


def correct_domains(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  """How many one-logit domain predictions (positive: target) are right."""
  return tf.reduce_sum(tf.cast(
      tf.equal(tf.cast(logits > 0, tf.float32), labels), tf.float32))


def mdd_disparity(logits_s: tf.Tensor, logits_t: tf.Tensor,
                  adversary_logits_s: tf.Tensor,
                  adversary_logits_t: tf.Tensor, margin: float) -> tf.Tensor:
  """The auxiliary classifier's loss in MDD, which it minimizes:

      margin * CE(f'(x_s), argmax f(x_s)) - mean log(1 - p'_t[argmax f(x_t)])

  that is, agree with f on the source and disagree on the target. The main
  classifier's predictions are labels here (no gradient through them).
  """
  labels_s = tf.stop_gradient(tf.argmax(logits_s, -1))
  labels_t = tf.stop_gradient(tf.argmax(logits_t, -1))
  agree_s = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels_s, adversary_logits_s))
  probs_t = tf.gather(tf.nn.softmax(adversary_logits_t), labels_t,
                      batch_dims=1)
  disagree_t = -tf.reduce_mean(
      tf.math.log(tf.maximum(1.0 - probs_t, _MDD_EPSILON)))
  return margin * agree_s + disagree_t
