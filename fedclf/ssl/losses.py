"""Self-supervised objectives as pure TensorFlow functions.

Each takes the embeddings of two views of the same batch (row i of each is
the same image) and returns a scalar; none holds state, so each can run
inside any tf.function (centralized or federated steps). The tests check
every one against a direct numpy computation.
"""

from __future__ import annotations

import tensorflow as tf

# Masks self-similarity out of the softmax; finite (not -inf) so that
# 0 * mask stays 0 in the gradient.
_LARGE_NUM = 1e9
_EPS = 1e-5


def nt_xent(z1: tf.Tensor, z2: tf.Tensor, temperature: float) -> tf.Tensor:
  """SimCLR's normalized temperature-scaled cross-entropy (Chen et al. 2020).

  The 2N embeddings are L2-normalized; each one's positive is the other view
  of its image and its negatives the remaining 2N - 2 embeddings, so the
  softmax runs over 2N - 1 candidates. Returns the mean over all 2N anchors.

  Args:
    z1, z2: [N, D] projections of view 1 and view 2.
    temperature: softmax temperature (> 0).
  """
  z = tf.math.l2_normalize(tf.concat([z1, z2], axis=0), axis=1)
  n = tf.shape(z1)[0]
  logits = tf.matmul(z, z, transpose_b=True) / temperature
  logits -= _LARGE_NUM * tf.eye(2 * n, dtype=logits.dtype)
  # Anchor i's positive is i + N, anchor i + N's is i.
  positives = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], axis=0)
  return tf.reduce_mean(
      tf.nn.sparse_softmax_cross_entropy_with_logits(positives, logits))


def negative_cosine(p: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
  """Mean of -cos(p_i, z_i) with the gradient stopped at z (SimSiam's D)."""
  p = tf.math.l2_normalize(p, axis=1)
  z = tf.math.l2_normalize(tf.stop_gradient(z), axis=1)
  return -tf.reduce_mean(tf.reduce_sum(p * z, axis=1))


def simsiam_loss(p1: tf.Tensor, p2: tf.Tensor, z1: tf.Tensor,
                 z2: tf.Tensor) -> tf.Tensor:
  """SimSiam's symmetric loss (Chen & He 2021): D(p1, z2)/2 + D(p2, z1)/2.

  Args:
    p1, p2: [N, D] predictor outputs of views 1 and 2.
    z1, z2: [N, D] projector outputs (targets; no gradient flows into them).

  Returns:
    A scalar in [-1, 1]; -1 when each prediction points along its target.
  """
  return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)


def _standardize(z: tf.Tensor) -> tf.Tensor:
  """Each column to zero mean and unit (population) std over the batch."""
  mean, variance = tf.nn.moments(z, axes=[0])
  return (z - mean) / tf.sqrt(variance + _EPS)


def barlow_twins_loss(z1: tf.Tensor, z2: tf.Tensor,
                      lambd: float) -> tf.Tensor:
  """Barlow Twins' redundancy reduction (Zbontar et al. 2021).

  C = z1n^T z2n / N is the cross-correlation of the batch-standardized
  embeddings; the loss is sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2.

  Args:
    z1, z2: [N, D] projections of view 1 and view 2 (N >= 2).
    lambd: weight of the off-diagonal (redundancy) term.
  """
  n = tf.cast(tf.shape(z1)[0], z1.dtype)
  c = tf.matmul(_standardize(z1), _standardize(z2), transpose_a=True) / n
  diagonal = tf.linalg.diag_part(c)
  on_diagonal = tf.reduce_sum(tf.square(1.0 - diagonal))
  off_diagonal = tf.reduce_sum(tf.square(c)) - tf.reduce_sum(
      tf.square(diagonal))
  return on_diagonal + lambd * off_diagonal


def byol_loss(p1: tf.Tensor, p2: tf.Tensor, t1: tf.Tensor,
              t2: tf.Tensor) -> tf.Tensor:
  """BYOL's symmetrized loss (Grill et al. 2020).

  ||p - t||^2 of L2-normalized vectors = 2 - 2 cos(p, t); each online
  prediction regresses the target projection of the other view.

  Args:
    p1, p2: [N, D] online predictions of views 1 and 2.
    t1, t2: [N, D] target-network projections (no gradient flows into them).

  Returns:
    A scalar in [0, 8]: the sum of both directions' means, as in the paper.
  """
  return (2.0 + 2.0 * negative_cosine(p1, t2)) + (
      2.0 + 2.0 * negative_cosine(p2, t1))


# VICReg's std floor inside the square root (the paper's reference code).
_VICREG_STD_EPS = 1e-4


def _off_diagonal_square_sum(c: tf.Tensor) -> tf.Tensor:
  return tf.reduce_sum(tf.square(c)) - tf.reduce_sum(
      tf.square(tf.linalg.diag_part(c)))


def _variance_and_covariance(z: tf.Tensor):
  """VICReg's hinge on each column's std and its off-diagonal covariance.

  Both use the unbiased (N - 1) estimate, as the paper's code does.
  """
  n = tf.cast(tf.shape(z)[0], z.dtype)
  d = tf.cast(tf.shape(z)[1], z.dtype)
  centred = z - tf.reduce_mean(z, axis=0)
  cov = tf.matmul(centred, centred, transpose_a=True) / (n - 1.0)
  std = tf.sqrt(tf.linalg.diag_part(cov) + _VICREG_STD_EPS)
  return (tf.reduce_mean(tf.nn.relu(1.0 - std)),
          _off_diagonal_square_sum(cov) / d)


def vicreg_loss(z1: tf.Tensor, z2: tf.Tensor, invariance_weight: float,
                variance_weight: float,
                covariance_weight: float) -> tf.Tensor:
  """VICReg's variance-invariance-covariance loss (Bardes et al. 2022).

  invariance: mean over all N * D entries of (z1 - z2)^2;
  variance: mean_j max(0, 1 - sqrt(Var(z_j) + 1e-4)), averaged over both
  views; covariance: sum of squared off-diagonal covariances / D, summed
  over both views.

  Args:
    z1, z2: [N, D] expander outputs of view 1 and view 2 (N >= 2).
    invariance_weight, variance_weight, covariance_weight: the paper's
      lambda, mu and nu (25, 25, 1).
  """
  invariance = tf.reduce_mean(tf.square(z1 - z2))
  variance1, covariance1 = _variance_and_covariance(z1)
  variance2, covariance2 = _variance_and_covariance(z2)
  return (invariance_weight * invariance +
          variance_weight * 0.5 * (variance1 + variance2) +
          covariance_weight * (covariance1 + covariance2))
