"""CDAN's and MDD's losses against numpy on tiny hand-made tensors."""

import numpy as np
import pytest
import tensorflow as tf

from fedclf.adapt import alignment_losses as losses
from fedclf.adapt.grl import gradient_reversal

FEATURES = np.asarray([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]], np.float32)
PROBS = np.asarray([[0.7, 0.3], [0.1, 0.9]], np.float32)


def _np_entropy(p):
  return -np.sum(p * np.log(p), axis=-1)


def test_multilinear_map_is_the_flattened_outer_product():
  mapped = losses.multilinear_map(tf.constant(FEATURES), tf.constant(PROBS))
  assert mapped.shape == (2, 6)
  # Row 0: f_0 * g_0, f_0 * g_1, f_1 * g_0, ...
  np.testing.assert_allclose(mapped.numpy()[0],
                             [0.7, 0.3, 1.4, 0.6, 0.0, 0.0], rtol=1e-6)
  np.testing.assert_allclose(
      mapped.numpy(), np.stack([np.outer(f, g).ravel()
                                for f, g in zip(FEATURES, PROBS)]),
      rtol=1e-6)


def test_randomized_map_matches_numpy_and_approximates_inner_products():
  r_f, r_g = losses.random_projections(3, 2, 4, seed=0)
  assert r_f.shape == (3, 4) and r_g.shape == (2, 4)
  np.testing.assert_array_equal(r_f, losses.random_projections(3, 2, 4, 0)[0])
  mapped = losses.randomized_multilinear_map(
      tf.constant(FEATURES), tf.constant(PROBS), tf.constant(r_f),
      tf.constant(r_g)).numpy()
  np.testing.assert_allclose(mapped, (FEATURES @ r_f) * (PROBS @ r_g) / 2.0,
                             rtol=1e-5)
  # With many columns the map's inner products approach the full map's:
  # <T(f,g), T(f',g')> ~ <f,f'> <g,g'>.
  r_f, r_g = losses.random_projections(3, 2, 200_000, seed=1)
  big = losses.randomized_multilinear_map(
      tf.constant(FEATURES), tf.constant(PROBS), tf.constant(r_f),
      tf.constant(r_g)).numpy()
  full = np.stack([np.outer(f, g).ravel() for f, g in zip(FEATURES, PROBS)])
  np.testing.assert_allclose(big @ big.T, full @ full.T, rtol=0.05, atol=0.05)


def test_entropy_weights_normalized_per_domain():
  probs = np.asarray([[0.5, 0.5], [0.99, 0.01], [0.8, 0.2]], np.float32)
  weights = losses.entropy_weights(tf.constant(probs), 2).numpy()
  raw = 1.0 + np.exp(-_np_entropy(probs))
  np.testing.assert_allclose(
      weights, [raw[0] / raw[:2].sum(), raw[1] / raw[:2].sum(), 1.0],
      rtol=1e-5)
  # The confident source example weighs more than the uniform one.
  assert weights[1] > weights[0]
  # A one-hot row has entropy 0 (0 log 0 = 0), not NaN.
  assert losses.entropy(tf.constant([[1.0, 0.0]])).numpy() == [0.0]


def test_weighted_domain_loss():
  logits = np.asarray([0.5, -1.0, 2.0], np.float32)
  labels = np.asarray([0.0, 0.0, 1.0], np.float32)
  bce = (np.maximum(logits, 0) - logits * labels +
         np.log1p(np.exp(-np.abs(logits))))
  plain = losses.weighted_domain_loss(tf.constant(logits), tf.constant(labels))
  assert float(plain) == pytest.approx(bce.mean(), rel=1e-5)
  weights = np.asarray([0.25, 0.75, 1.0], np.float32)
  weighted = losses.weighted_domain_loss(
      tf.constant(logits), tf.constant(labels), tf.constant(weights))
  assert float(weighted) == pytest.approx((weights * bce).sum() / 2.0,
                                          rel=1e-5)
  assert float(losses.correct_domains(tf.constant(logits),
                                      tf.constant(labels))) == 2.0
  np.testing.assert_array_equal(losses.domain_labels(tf.constant(3), 1),
                                [0.0, 1.0, 1.0])


def test_mdd_disparity_against_numpy():
  logits_s = np.asarray([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
  logits_t = np.asarray([[0.0, 3.0, 0.0]], np.float32)
  adv_s = np.asarray([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], np.float32)
  adv_t = np.asarray([[0.0, 1.0, 1.0]], np.float32)

  def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  p_s, p_t = softmax(adv_s), softmax(adv_t)
  agree = -np.mean(np.log([p_s[0, 0], p_s[1, 2]]))  # f's labels: 0 and 2
  disagree = -np.log(1.0 - p_t[0, 1])  # f's label: 1
  value = losses.mdd_disparity(*(tf.constant(a) for a in (
      logits_s, logits_t, adv_s, adv_t)), margin=4.0)
  assert float(value) == pytest.approx(4.0 * agree + disagree, rel=1e-5)


def test_mdd_gradients_train_the_adversary_and_reverse_into_features():
  """Through the gradient reversal the features get -lambda times the
  auxiliary classifier's gradient; f's logits get none."""
  features = tf.Variable([[1.0, -0.5], [0.3, 0.8]])
  kernel = tf.Variable([[0.2, -0.1, 0.4], [0.5, 0.3, -0.2]])
  logits = tf.Variable([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  with tf.GradientTape(persistent=True) as tape:
    direct = losses.mdd_disparity(logits[:1], logits[1:],
                                  (features @ kernel)[:1],
                                  (features @ kernel)[1:], 2.0)
    reversed_ = gradient_reversal(features, 0.5) @ kernel
    through_grl = losses.mdd_disparity(logits[:1], logits[1:],
                                       reversed_[:1], reversed_[1:], 2.0)
  np.testing.assert_allclose(tape.gradient(through_grl, features),
                             -0.5 * tape.gradient(direct, features),
                             rtol=1e-5)
  np.testing.assert_allclose(tape.gradient(through_grl, kernel),
                             tape.gradient(direct, kernel), rtol=1e-5)
  assert tape.gradient(through_grl, logits) is None
