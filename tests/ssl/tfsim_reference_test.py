"""fedclf's SSL losses against tensorflow-similarity's, to float tolerance.

fedclf keeps its own losses at run time (they are the ones its numpy tests
pin and its recorded runs used); tensorflow-similarity is the independent
reference. Where the two libraries' conventions differ, the test states the
difference and checks the losses agree once it is accounted for (see
BUILD_NOTES.md, "tensorflow-similarity").
"""

import numpy as np
import pytest
import tensorflow as tf

from fedclf.ssl import losses
from fedclf.ssl.retrieval import _stderr_silenced

with _stderr_silenced():  # nmslib's import hint
  from tensorflow_similarity import losses as tfsim_losses  # pylint: disable=g-import-not-at-top


@pytest.fixture
def embeddings():
  rng = np.random.default_rng(0)
  return [tf.constant(rng.normal(size=(8, 6)).astype(np.float32))
          for _ in range(4)]


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_simclr_is_half_of_tfsim(embeddings, temperature):
  # tfsim sums the two directions' per-anchor losses and averages over the
  # N anchors of one view; fedclf averages over all 2N anchors.
  z1, z2 = embeddings[:2]
  tfsim = tfsim_losses.SimCLRLoss(temperature=temperature)(z1, z2)
  np.testing.assert_allclose(float(losses.nt_xent(z1, z2, temperature)),
                             0.5 * float(tfsim), rtol=1e-5)


def test_simsiam_matches_tfsim_without_its_margin(embeddings):
  # tfsim's SimSiamLoss(projector, predictor) is one direction, halved,
  # plus a 1e-3 margin, and stops no gradient itself.
  p1, p2, z1, z2 = embeddings
  tfsim = tfsim_losses.SimSiamLoss(margin=0.0)
  expected = float(tfsim(z2, p1)) + float(tfsim(z1, p2))
  np.testing.assert_allclose(float(losses.simsiam_loss(p1, p2, z1, z2)),
                             expected, rtol=1e-5)


@pytest.mark.parametrize("lambd", [0.0, 5e-3, 0.5])
def test_barlow_twins_matches_tfsim(embeddings, lambd):
  # tfsim standardizes by the std itself, fedclf by sqrt(var + 1e-5) (as
  # BatchNorm does): equal up to ~1e-5 relative for unit-scale columns.
  z1, z2 = embeddings[:2]
  tfsim = tfsim_losses.Barlow(lambda_=lambd, margin=0.0)(z1, z2)
  np.testing.assert_allclose(float(losses.barlow_twins_loss(z1, z2, lambd)),
                             float(tfsim), rtol=1e-4)


def test_vicreg_invariance_and_covariance_match_tfsim(embeddings):
  z1, z2 = embeddings[:2]
  # tfsim returns the per-example invariance term; its mean is the loss.
  tfsim = tfsim_losses.VicReg(lambda_=25.0, mu=0.0, nu=1.0)(z1, z2)
  np.testing.assert_allclose(float(losses.vicreg_loss(z1, z2, 25.0, 0.0, 1.0)),
                             float(tf.reduce_mean(tfsim)), rtol=1e-5)


def test_vicreg_variance_matches_tfsim_up_to_bessel(embeddings):
  # tfsim's std hinge uses the population variance, the paper's code (and
  # fedclf) the unbiased one: tfsim on z * sqrt(N / (N - 1)) is fedclf on z.
  z1, z2 = (0.3 * z for z in embeddings[:2])  # std < 1: the hinge is active
  n = float(z1.shape[0])
  scale = np.sqrt(n / (n - 1.0))
  tfsim = tfsim_losses.VicReg(lambda_=0.0, mu=25.0, nu=0.0)(scale * z1,
                                                            scale * z2)
  fedclf = float(losses.vicreg_loss(z1, z2, 0.0, 25.0, 0.0))
  assert fedclf > 1.0
  np.testing.assert_allclose(fedclf, float(tf.reduce_mean(tfsim)), rtol=1e-5)
