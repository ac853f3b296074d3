"""Input standardization per domain (AdaptConfig.normalization) and the
target's own slice sizes (target_limits)."""

import os

import numpy as np
import pytest

from fedclf.adapt import AdaptConfig
from fedclf.adapt import AdaptRunConfig
from fedclf.adapt import AdaptationTask
from fedclf.adapt import DomainLimits
from fedclf.adapt import DomainPair
from fedclf.adapt import run_adaptation
from fedclf.adapt.task import pooled_normalization
from fedclf.data import make_image_dataset
from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.models import ModelConfig
from fedclf.train import OptimizerConfig
from fedclf.train import TrainConfig

REAL_DATA = os.environ.get("FEDCLF_DATA_DIR", "")
needs_real_data = pytest.mark.skipif(
    not all(os.path.isdir(os.path.join(REAL_DATA, d))
            for d in ("mnist", "usps", "cifar10")),
    reason="FEDCLF_DATA_DIR with the real files is not set")


def _domain(name, brightness, n, rng):
  # Dark digits on a background of `brightness`, per channel.
  x = np.clip(rng.normal(brightness, 0.1, (n, 8, 8, 3)), 0, 1).astype(
      np.float32)
  y = np.arange(n) % 2
  return make_image_dataset(name, "synthetic", x, y, x[:4], y[:4],
                            ["a", "b"])


def _task(normalization):
  rng = np.random.default_rng(0)
  pair = DomainPair(_domain("dark", [0.1, 0.2, 0.3], 60, rng),
                    _domain("bright", [0.7, 0.6, 0.5], 20, rng))
  return pair, AdaptationTask(pair, "mlp", ModelConfig(),
                              AdaptConfig(normalization=normalization))


def test_per_domain_uses_each_domains_own_statistics():
  pair, task = _task("per_domain")
  normalizations = task.normalizations()
  assert normalizations.source == Normalization.from_images(
      pair.source.x_train)
  assert normalizations.target == Normalization.from_images(
      pair.target.x_train)
  # Each domain's standardized training images: zero mean, unit std.
  for norm, ds in ((normalizations.source, pair.source),
                   (normalizations.target, pair.target)):
    z = norm.apply(ds.x_train)
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1, atol=1e-3)


def test_source_normalization_puts_a_shifted_target_off_centre():
  pair, task = _task("source")
  normalizations = task.normalizations()
  assert normalizations.source == normalizations.target
  z = normalizations.target.apply(pair.target.x_train)
  # The bright target lands several source standard deviations off zero:
  # the input shift that made DANN collapse on MNIST -> MNIST-M.
  assert z.mean() > 3


def test_pooled_statistics_weigh_the_domains_equally():
  pair, task = _task("pooled")
  normalizations = task.normalizations()
  assert normalizations.source == normalizations.target
  # Equal weight: the statistics of the two sets at equal size (the source
  # has three times the target's images; tiling the target balances them).
  balanced = np.concatenate([pair.source.x_train,
                             np.tile(pair.target.x_train, (3, 1, 1, 1))])
  expected = Normalization.from_images(balanced)
  np.testing.assert_allclose(normalizations.source.mean, expected.mean,
                             rtol=1e-5)
  np.testing.assert_allclose(normalizations.source.std, expected.std,
                             rtol=1e-4)
  same = pooled_normalization([pair.source.x_train, pair.source.x_train])
  np.testing.assert_allclose(
      same.std, Normalization.from_images(pair.source.x_train).std,
      rtol=1e-4)


def test_unknown_normalization_is_a_user_error():
  with pytest.raises(UserError, match="unknown normalization 'batch'"):
    AdaptConfig(normalization="batch").validate()


@needs_real_data
@pytest.mark.parametrize("normalization", ["per_domain", "source"])
def test_run_scores_each_domain_with_its_statistics(normalization, tmp_path):
  config = AdaptRunConfig(
      source="mnist", target="usps", method="source_only", model_name="mlp",
      model=ModelConfig(width_multiplier=0.25),
      limits=DomainLimits(train=300, test=100),
      target_limits=DomainLimits(train=120, test=50),
      adapt=AdaptConfig(
          train=TrainConfig(epochs=1, batch_size=64,
                            optimizer=OptimizerConfig("momentum", 0.05),
                            checkpoint_every=0),
          normalization=normalization))
  summary = run_adaptation(config, str(tmp_path), {})
  pair = config.load_pair()
  assert len(pair.source.y_train) == 300 and len(pair.target.y_train) == 120
  assert len(pair.target.y_test) == 50
  assert summary["normalization"] == normalization
  source = Normalization.from_images(pair.source.x_train)
  target = Normalization.from_images(pair.target.x_train)
  expected = {"source_normalization": source,
              "target_normalization": (target if normalization ==
                                       "per_domain" else source)}
  for key, norm in expected.items():
    for field in ("mean", "std"):
      np.testing.assert_allclose(summary[key][field], getattr(norm, field),
                                 rtol=1e-6)
  # MNIST's and USPS's pixel statistics differ, so the check above tells
  # the two modes apart.
  assert abs(source.mean[0] - target.mean[0]) > 0.05
