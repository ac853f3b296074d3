"""Each SSL loss against a direct numpy computation."""

import numpy as np
import pytest
import tensorflow as tf

from fedclf.ssl import losses


def normalized(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_nt_xent(z1, z2, temperature):
  z = normalized(np.concatenate([z1, z2]).astype(np.float64))
  n = len(z1)
  total = 0.0
  for i in range(2 * n):
    positive = (i + n) % (2 * n)
    others = [j for j in range(2 * n) if j != i]
    logits = np.array([z[i] @ z[j] for j in others]) / temperature
    total += -(z[i] @ z[positive] / temperature) + np.log(np.exp(logits).sum())
  return total / (2 * n)


def numpy_neg_cos(p, z):
  return -np.mean(np.sum(normalized(p) * normalized(z), axis=1))


def numpy_barlow(z1, z2, lambd):
  def standardize(z):
    return (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)

  c = standardize(z1).T @ standardize(z2) / len(z1)
  on = np.sum((1 - np.diag(c))**2)
  off = np.sum(c**2) - np.sum(np.diag(c)**2)
  return on + lambd * off


def numpy_vicreg(z1, z2, lambd, mu, nu):
  """The paper's pseudo-code (Bardes et al. 2022, Algorithm 1) in numpy."""
  n, d = z1.shape
  invariance = np.mean((z1 - z2)**2)

  def variance_and_covariance(z):
    std = np.sqrt(z.var(axis=0, ddof=1) + 1e-4)
    zc = z - z.mean(axis=0)
    cov = zc.T @ zc / (n - 1)
    off = cov - np.diag(np.diag(cov))
    return np.mean(np.maximum(0, 1 - std)), np.sum(off**2) / d

  v1, c1 = variance_and_covariance(z1.astype(np.float64))
  v2, c2 = variance_and_covariance(z2.astype(np.float64))
  return lambd * invariance + mu * (v1 + v2) / 2 + nu * (c1 + c2)


@pytest.fixture
def embeddings():
  rng = np.random.default_rng(0)
  return [rng.normal(size=(6, 5)).astype(np.float32) for _ in range(4)]


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_numpy(embeddings, temperature):
  z1, z2 = embeddings[:2]
  got = float(losses.nt_xent(z1, z2, temperature))
  np.testing.assert_allclose(got, numpy_nt_xent(z1, z2, temperature),
                             rtol=1e-5)


def test_nt_xent_low_for_identical_separated_embeddings():
  z = np.eye(8, dtype=np.float32)  # orthogonal: every negative has cos 0
  loss = float(losses.nt_xent(z, z, 0.1))
  # -log(e^10 / (e^10 + 14)): the 14 negatives barely register.
  assert loss == pytest.approx(np.log1p(14 * np.exp(-10.0)), rel=1e-4)
  assert loss < 1e-3
  rng = np.random.default_rng(1)
  random_pairs = float(losses.nt_xent(z, rng.normal(size=(8, 8)), 0.1))
  assert random_pairs > 1.0
  # Scale-invariant (cosine similarity).
  assert float(losses.nt_xent(3 * z, 0.5 * z, 0.1)) == pytest.approx(loss,
                                                                       rel=1e-4)


def test_simsiam_matches_numpy_and_stops_gradient(embeddings):
  p1, p2, z1, z2 = (tf.constant(e) for e in embeddings)
  expected = (0.5 * numpy_neg_cos(embeddings[0], embeddings[3]) +
              0.5 * numpy_neg_cos(embeddings[1], embeddings[2]))
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([p1, p2, z1, z2])
    loss = losses.simsiam_loss(p1, p2, z1, z2)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert tape.gradient(loss, z1) is None and tape.gradient(loss, z2) is None
  assert tape.gradient(loss, p1) is not None
  # Each prediction along the other view's target: the minimum, -1.
  assert float(losses.simsiam_loss(z2, z1, z1, z2)) == pytest.approx(-1.0)


@pytest.mark.parametrize("lambd", [0.0, 5e-3, 0.5])
def test_barlow_twins_matches_numpy(embeddings, lambd):
  z1, z2 = embeddings[:2]
  np.testing.assert_allclose(float(losses.barlow_twins_loss(z1, z2, lambd)),
                             numpy_barlow(z1, z2, lambd), rtol=1e-4)


def test_barlow_twins_zero_for_identical_decorrelated_embeddings():
  # Columns of a centred orthogonal design: standardized, C is the identity.
  z = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float32)
  assert float(losses.barlow_twins_loss(z, z, 1.0)) < 1e-4
  assert float(losses.barlow_twins_loss(z, z[:, ::-1], 1.0)) > 1.0


def test_byol_matches_numpy(embeddings):
  p1, p2, t1, t2 = embeddings
  expected = (2 + 2 * numpy_neg_cos(p1, t2)) + (2 + 2 * numpy_neg_cos(p2, t1))
  np.testing.assert_allclose(float(losses.byol_loss(p1, p2, t1, t2)),
                             expected, rtol=1e-5)
  assert float(losses.byol_loss(t2, t1, t1, t2)) == pytest.approx(0.0,
                                                                   abs=1e-5)


@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 0.0, 0.0),
                                     (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)])
def test_vicreg_matches_numpy(embeddings, weights):
  z1, z2 = embeddings[:2]
  # Small-scale embeddings: the std hinge max(0, 1 - std) is active.
  for scale in (1.0, 0.2):
    np.testing.assert_allclose(
        float(losses.vicreg_loss(scale * z1, scale * z2, *weights)),
        numpy_vicreg(scale * z1, scale * z2, *weights), rtol=1e-5)


def test_vicreg_terms_vanish_for_identical_spread_decorrelated_views():
  # Columns of a centred orthogonal design scaled to std >= 1: no
  # invariance, variance or covariance penalty.
  z = 2.0 * np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float32)
  assert float(losses.vicreg_loss(z, z, 25.0, 25.0, 1.0)) == pytest.approx(
      0.0, abs=1e-6)
  # Collapsed views: every variance hinge is ~1 (std = sqrt(1e-4)).
  collapsed = np.ones((4, 2), np.float32)
  assert float(losses.vicreg_loss(collapsed, collapsed, 25.0, 25.0,
                                  1.0)) == pytest.approx(25 * 0.99, rel=1e-5)
