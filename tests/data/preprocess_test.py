"""tf.data pipelines: normalization, seeded augmentation, batching."""

import numpy as np
import pytest
import tensorflow as tf

from fedclf.data.preprocess import augment_image
from fedclf.data.preprocess import AugmentConfig
from fedclf.data.preprocess import make_pipeline
from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError


def _data(n=40, shape=(8, 8, 3)):
  rng = np.random.default_rng(0)
  return rng.uniform(0, 1, (n,) + shape).astype(np.float32), np.arange(n) % 4


def _batches(ds):
  return [(x.numpy(), y.numpy()) for x, y in ds]


def test_normalization_gives_zero_mean_unit_std():
  x, y = _data()
  norm = Normalization.from_images(x)
  batches = _batches(make_pipeline(x, y, 64, norm))
  out = batches[0][0]
  np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1, atol=1e-4)


def test_batches_cover_all_examples_in_order_without_shuffle():
  x, y = _data(10)
  batches = _batches(make_pipeline(x, y, 4, Normalization.from_images(x)))
  assert [len(b[1]) for b in batches] == [4, 4, 2]
  np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


def test_shuffle_and_augment_are_seeded():
  x, y = _data()
  norm = Normalization.from_images(x)
  aug = AugmentConfig.from_names(["crop", "flip", "rotate", "jitter"])
  make = lambda seed: make_pipeline(x, y, 8, norm, shuffle=True, seed=seed,
                                    augment=aug)
  first, again, other = _batches(make(1)), _batches(make(1)), _batches(make(2))
  np.testing.assert_array_equal(first[0][0], again[0][0])
  assert not np.array_equal(first[0][0], other[0][0])
  # TensorFlow's global seed (set by Keras model building) changes nothing.
  tf.keras.utils.set_random_seed(123)
  np.testing.assert_array_equal(_batches(make(1))[0][0], first[0][0])
  # Same order, new augmentation seed: the images differ.
  plain = _batches(make_pipeline(x, y, 8, norm, shuffle=True, seed=1))
  assert not np.allclose(plain[0][0], first[0][0])


def test_each_augmentation_changes_image_and_stays_in_range():
  x, _ = _data(1, (16, 16, 3))
  image = x[0]
  for cfg in (AugmentConfig(crop_padding_fraction=0.25),
              AugmentConfig(flip=True), AugmentConfig(rotation_degrees=30),
              AugmentConfig(jitter=0.5)):
    outs = [augment_image(image, np.array([s, 0], np.int64), cfg).numpy()
            for s in range(6)]
    assert all(o.shape == image.shape for o in outs)
    assert all(0.0 <= o.min() and o.max() <= 1.0 for o in outs)
    assert any(not np.allclose(o, image) for o in outs), cfg


def test_rotation_by_zero_is_identity():
  x, _ = _data(1, (9, 9, 1))
  from fedclf.data.preprocess import _rotate
  np.testing.assert_allclose(_rotate(x[0], np.float32(0.0)).numpy(), x[0],
                             atol=1e-6)


def test_bad_inputs():
  x, y = _data()
  with pytest.raises(UserError, match="unknown augmentation 'blur'"):
    AugmentConfig.from_names(["blur"])
  with pytest.raises(UserError):
    make_pipeline(x, y, 0, Normalization.from_images(x))
