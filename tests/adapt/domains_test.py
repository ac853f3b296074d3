"""Domains: loaders, alignment of shapes and labels, MNIST-M generation,
mixtures and the per_domain partitioner."""

import os

import numpy as np
import pytest

from fedclf.adapt import align
from fedclf.adapt import per_domain
from fedclf.adapt import DomainLimits
from fedclf.adapt import DomainOptions
from fedclf.adapt import load_domain
from fedclf.adapt import load_domain_pair
from fedclf.adapt import make_mnist_m
from fedclf.adapt import mixture_name
from fedclf.adapt import mnist_m as mnist_m_lib
from fedclf.data import DataConfig
from fedclf.data import load_dataset
from fedclf.data import make_image_dataset
from fedclf.errors import DataFileError
from fedclf.errors import UserError
from fedclf.partition import partition
from fedclf.partition import PartitionConfig
from fedclf.registry import UnknownNameError

REAL_DATA = os.environ.get("FEDCLF_DATA_DIR", "")
needs_real_data = pytest.mark.skipif(
    not all(os.path.isdir(os.path.join(REAL_DATA, d))
            for d in ("mnist", "usps", "cifar10")),
    reason="FEDCLF_DATA_DIR with the real files is not set")
LIMITS = DomainLimits(train=200, test=100)


def _check_aligned(pair, shape):
  for ds in (pair.source, pair.target):
    assert ds.input_shape == shape
    assert ds.class_names == [str(i) for i in range(10)]
    for x in (ds.x_train, ds.x_test):
      assert x.dtype == np.float32
      assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(np.unique(ds.y_train)) <= set(range(10))
  assert pair.num_classes == 10 and pair.input_shape == shape


@needs_real_data
def test_mnist_usps_pair_aligned_grayscale():
  pair = load_domain_pair("mnist", "usps", 28, limits=LIMITS, seed=1)
  _check_aligned(pair, (28, 28, 1))
  assert len(pair.source.y_train) == 200 and len(pair.target.y_test) == 100
  # USPS (16x16) was upsampled; its digits fill the frame, MNIST's do not.
  assert pair.target.x_train[:, :2].mean() > pair.source.x_train[:, :2].mean()
  again = load_domain_pair("usps", "mnist", 20, limits=LIMITS, seed=1)
  _check_aligned(again, (20, 20, 1))
  np.testing.assert_array_equal(again.source.y_train, pair.target.y_train)


@needs_real_data
def test_mnist_m_pair_is_colour_and_shares_mnist_digits():
  pair = load_domain_pair("mnist", "mnist_m", 32, limits=LIMITS)
  _check_aligned(pair, (32, 32, 3))
  # Grayscale replicated into three equal channels.
  x = pair.source.x_train
  np.testing.assert_array_equal(x[..., 0], x[..., 2])
  # The same seed and limit slice the same MNIST digits.
  np.testing.assert_array_equal(pair.source.y_train, pair.target.y_train)
  assert np.std(pair.target.x_train[..., 0] - pair.target.x_train[..., 1]) > 0
  gray = load_domain_pair("mnist_m", "usps", 28, channels=1, limits=LIMITS)
  _check_aligned(gray, (28, 28, 1))


@needs_real_data
def test_mnist_m_domain_deterministic_and_sliced_consistently():
  options = DomainOptions(limits=LIMITS, seed=3)
  a = load_domain("mnist_m", options)
  b = load_domain("mnist_m", options)
  np.testing.assert_array_equal(a.x_train, b.x_train)
  np.testing.assert_array_equal(a.x_test, b.x_test)
  assert a.x_train.shape == (200, 28, 28, 3)
  other = load_domain("mnist_m", DomainOptions(limits=LIMITS, seed=3,
                                               mnist_m_seed=1))
  np.testing.assert_array_equal(a.y_train, other.y_train)
  assert not np.array_equal(a.x_train, other.x_train)
  # A limited load holds exactly those images of the full MNIST-M: the
  # crops are drawn for all 60,000 digits, then the seeded slice is taken.
  mnist = load_domain("mnist", options)
  photos = load_dataset(DataConfig("cifar10"))
  index = np.sort(np.random.default_rng(3).permutation(60000)[:200])
  crops = mnist_m_lib.draw_crops(60000, photos.x_train.shape, (0, 0))
  np.testing.assert_array_equal(
      a.x_train, mnist_m_lib.blend(mnist.x_train, photos.x_train,
                                   crops.take(index)))
  np.testing.assert_array_equal(a.y_train, mnist.y_train)


def test_make_mnist_m_deterministic_in_range_and_blends():
  rng = np.random.default_rng(0)
  digits = (rng.random((50, 28, 28, 1)) > 0.8).astype(np.float32)
  digits *= rng.random((50, 28, 28, 1)).astype(np.float32)
  photos = rng.random((7, 32, 32, 3)).astype(np.float32)
  a = make_mnist_m(digits, photos, seed=5)
  b = make_mnist_m(digits, photos, seed=5)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (50, 28, 28, 3) and a.dtype == np.float32
  assert 0.0 <= a.min() and a.max() <= 1.0
  assert not np.array_equal(a, make_mnist_m(digits, photos, seed=6))
  # |patch - stroke|: ink pixels are 1 - patch, the rest the patch itself.
  patches = make_mnist_m(np.zeros_like(digits), photos, seed=5)
  ink = np.broadcast_to(digits > 0, a.shape)
  np.testing.assert_allclose(a[ink], 1.0 - patches[ink], atol=1e-6)
  np.testing.assert_allclose(a[~ink], patches[~ink], atol=1e-6)
  # Crops drawn for a whole set, then taken, match a direct build.
  crops = mnist_m_lib.draw_crops(50, photos.shape, 5)
  part = mnist_m_lib.blend(digits[10:20], photos, crops.take(np.arange(10,
                                                                      20)))
  np.testing.assert_array_equal(part, a[10:20])
  with pytest.raises(UserError, match="grayscale digits"):
    make_mnist_m(photos, photos, seed=0)


def _toy(name, classes, n=30):
  rng = np.random.default_rng(len(name))
  y = np.arange(n) % len(classes)
  return make_image_dataset(name, "toy", rng.random((n, 8, 8, 1)), y,
                            rng.random((n, 8, 8, 1)), y, classes)


def test_align_restricts_to_shared_labels_and_renumbers():
  a = _toy("a", ["0", "1", "2", "3"])
  b = _toy("b", ["3", "1", "9"])
  shared = align([a, b], 12, 3)
  assert shared == ["1", "3"] and a.class_names == b.class_names == shared
  for ds in (a, b):
    assert ds.input_shape == (12, 12, 3) and ds.num_classes == 2
    assert set(np.unique(ds.y_train)) == {0, 1}
  assert len(a.y_train) == 15  # 8 of class 1 and 7 of class 3 of 30
  with pytest.raises(UserError, match="share 0 class"):
    align([_toy("c", ["x", "y"]), _toy("d", ["z", "w"])], 8, 1)


def test_unknown_domain_and_variant_errors():
  with pytest.raises(UnknownNameError, match="choose one of: mnist, "
                     "mnist_corrupted, mnist_m, usps"):
    load_domain_pair("mnist", "svhn")
  with pytest.raises(UserError, match="unknown mnist_corrupted variant"):
    load_domain("mnist_corrupted/nope")
  with pytest.raises(UserError, match="has no variants"):
    load_domain("usps/fog")
  with pytest.raises(UserError, match="channels must be"):
    load_domain_pair("mnist", "usps", channels=2)


def test_mnist_corrupted_loads_if_prepared_else_one_line(tmp_path):
  data_dir = REAL_DATA or str(tmp_path)
  options = DomainOptions(data_dir=data_dir, download=False, limits=LIMITS)
  try:
    ds = load_domain("mnist_corrupted/shot_noise", options)
  except DataFileError as e:
    message = str(e)
    assert "\n" not in message and "mnist_corrupted/shot_noise" in message
    pytest.skip("MNIST-C is not prepared offline (error checked)")
  assert ds.input_shape == (28, 28, 1) and len(ds.y_train) == 200


@needs_real_data
def test_mixture_dataset_and_per_domain_partition():
  ds = load_dataset(DataConfig(mixture_name(["usps", "mnist"]),
                               train_limit=400, test_limit=100, seed=2))
  assert ds.name == "domains:mnist+usps" and ds.input_shape == (28, 28, 1)
  ids = ds.train_client_ids
  assert set(np.unique(ids)) == {0, 1} and len(ids) == 400
  clients = partition("per_domain", ds.y_train,
                      PartitionConfig(num_clients=5, seed=0), ids)
  assert sorted(np.concatenate(clients).tolist()) == list(range(400))
  domains_held = [set(np.unique(ids[c])) for c in clients]
  assert all(len(held) == 1 for held in domains_held)
  counts = sorted(sum(1 for h in domains_held if h == {d}) for d in (0, 1))
  assert counts == [2, 3]


def test_per_domain_partitioner_edge_cases():
  ids = np.repeat([7, 8, 9], [10, 10, 2])
  labels = np.zeros(len(ids), np.int64)
  rng = np.random.default_rng(0)
  # Fewer clients than domains: whole domains per client.
  clients = per_domain(labels, PartitionConfig(num_clients=2), rng, ids)
  assert sorted(np.concatenate(clients).tolist()) == list(range(22))
  for c in clients:
    for d in np.unique(ids[c]):
      assert np.all(np.isin(np.flatnonzero(ids == d), c))
  with pytest.raises(UserError, match="use fewer clients"):
    per_domain(labels, PartitionConfig(num_clients=9), rng, ids)
  with pytest.raises(UserError, match="domains:mnist"):
    per_domain(labels, PartitionConfig(num_clients=2), rng, None)
