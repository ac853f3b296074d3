"""The adversarial methods' shared pieces: equal batches, CDAN's map
choice and their params."""

import numpy as np
import pytest

from fedclf.adapt import CdanParams
from fedclf.adapt import DannParams
from fedclf.adapt import MddParams
from fedclf.adapt.adversarial_training import epoch_order
from fedclf.adapt.methods.cdan import conditional_map
from fedclf.adapt.methods.cdan import FULL_MAP_LIMIT
from fedclf.errors import UserError
from fedclf.registry import ADAPTATION_METHODS


def test_epoch_order_gives_every_source_batch_as_many_target_images():
  # ADDA's MNIST -> USPS sizes: 2000 source, 1800 target, 64 a step.
  source, target = epoch_order(2000, 1800, 64, 32, epoch_seed=3)
  assert sorted(source) == list(range(2000))
  assert len(target) == 32 * 64
  # The first 1800 target indices are one permutation: each image once
  # before any repeats.
  assert sorted(target[:1800]) == list(range(1800))
  again = epoch_order(2000, 1800, 64, 32, epoch_seed=3)
  np.testing.assert_array_equal(target, again[1])


def test_conditional_map_full_up_to_the_limit_then_randomized():
  full, width = conditional_map(400, 10, 1024, seed=0)
  assert width == 4000 <= FULL_MAP_LIMIT
  features = np.ones((2, 400), np.float32)
  probs = np.full((2, 10), 0.1, np.float32)
  assert full(features, probs).shape == (2, 4000)
  randomized, width = conditional_map(500, 10, 1024, seed=0)
  assert width == 1024
  assert randomized(np.ones((2, 500), np.float32), probs).shape == (2, 1024)


def test_adversarial_params_registered_and_validated():
  assert ADAPTATION_METHODS.params_class("cdan") is CdanParams
  assert ADAPTATION_METHODS.params_class("mdd") is MddParams
  # The schedule defaults are one set of flags for the three methods.
  for params in (DannParams(), CdanParams(), MddParams()):
    assert params.dann_anneal_lr and params.dann_gamma == 10.0
  assert DannParams().dann_feature_layer == CdanParams().dann_feature_layer
  with pytest.raises(UserError, match="cdan discriminator widths"):
    CdanParams(cdan_hidden=(0,)).validate()
  with pytest.raises(UserError, match="cdan_random_dim"):
    CdanParams(cdan_random_dim=0).validate()
  with pytest.raises(UserError, match="mdd_margin must be > 0"):
    MddParams(mdd_margin=0.0).validate()
  with pytest.raises(UserError, match="mdd_weight must be >= 0"):
    MddParams(mdd_weight=-1.0).validate()
  with pytest.raises(UserError, match="dann_gamma must be >= 0"):
    MddParams(dann_gamma=float("nan")).validate()
