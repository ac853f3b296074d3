"""two_views: shapes, ranges, determinism per seed, per-channel behaviour."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.ssl import default_for
from fedclf.ssl import SslAugmentConfig
from fedclf.ssl import two_views

# No geometry change and no colour change: the views must equal the input.
IDENTITY = SslAugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
                            jitter_probability=0.0, grayscale_probability=0.0)


def images(shape, seed=0):
  return np.random.default_rng(seed).random(shape).astype(np.float32)


@pytest.mark.parametrize("shape,config", [
    ((6, 28, 28, 1), default_for("mnist")),
    ((6, 8, 8, 1), default_for("digits")),
    ((5, 32, 32, 3), default_for("cifar10")),
    ((5, 32, 32, 3), dataclasses.replace(default_for(3), blur_probability=0.5,
                                         rotation_degrees=20.0)),
])
def test_shapes_and_range(shape, config):
  x = images(shape)
  v1, v2 = two_views(x, tf.constant([1, 2]), config)
  for v in (v1, v2):
    assert v.shape == shape and v.dtype == tf.float32
    assert float(tf.reduce_min(v)) >= 0.0 and float(tf.reduce_max(v)) <= 1.0
  assert not np.allclose(v1.numpy(), v2.numpy())  # independent views


def test_deterministic_per_seed_inside_and_outside_tf_function():
  x = images((4, 32, 32, 3))
  config = dataclasses.replace(default_for(3), blur_probability=0.5)
  a = two_views(x, tf.constant([3, 4], tf.int64), config)
  b = two_views(x, tf.constant([3, 4], tf.int64), config)
  compiled = tf.function(lambda im, s: two_views(im, s, config))
  c = compiled(x, tf.constant([3, 4], tf.int64))
  d = two_views(x, tf.constant([3, 5], tf.int64), config)
  tf.random.set_seed(123)  # the global seed must not matter
  e = two_views(x, tf.constant([3, 4], tf.int64), config)
  for i in range(2):
    np.testing.assert_array_equal(a[i].numpy(), b[i].numpy())
    np.testing.assert_allclose(a[i].numpy(), c[i].numpy(), atol=1e-6)
    np.testing.assert_array_equal(a[i].numpy(), e[i].numpy())
    assert not np.allclose(a[i].numpy(), d[i].numpy())


@pytest.mark.parametrize("channels", [1, 3])
def test_identity_config_returns_the_input(channels):
  x = images((3, 16, 16, channels))
  v1, v2 = two_views(x, tf.constant([0, 1]), IDENTITY)
  np.testing.assert_allclose(v1.numpy(), x, atol=1e-5)
  np.testing.assert_allclose(v2.numpy(), x, atol=1e-5)


def test_flip_only_mirrors():
  x = images((16, 8, 8, 1))
  v1, _ = two_views(x, tf.constant([5, 6]),
                    dataclasses.replace(IDENTITY, flip=True))
  v1 = v1.numpy()
  flipped = [np.allclose(v1[i], x[i, :, ::-1], atol=1e-5) for i in range(16)]
  kept = [np.allclose(v1[i], x[i], atol=1e-5) for i in range(16)]
  assert all(f or k for f, k in zip(flipped, kept))
  assert any(flipped) and any(kept)


def test_colour_ops_are_noops_for_one_channel():
  x = images((4, 12, 12, 1))
  colour_only = dataclasses.replace(IDENTITY, jitter_probability=1.0,
                                    grayscale_probability=1.0)
  v1, _ = two_views(x, tf.constant([7, 8]), colour_only)
  np.testing.assert_allclose(v1.numpy(), x, atol=1e-5)


def test_grayscale_makes_rgb_channels_equal():
  x = images((4, 12, 12, 3))
  gray = dataclasses.replace(IDENTITY, grayscale_probability=1.0)
  v1, _ = two_views(x, tf.constant([7, 8]), gray)
  v1 = v1.numpy()
  np.testing.assert_allclose(v1[..., 0], v1[..., 1], atol=1e-6)
  np.testing.assert_allclose(v1[..., 0], v1[..., 2], atol=1e-6)
  assert not np.allclose(v1, x)


def test_crop_zooms_in():
  # A centred bright square: zoom-in crops never make it smaller.
  x = np.zeros((8, 32, 32, 1), np.float32)
  x[:, 12:20, 12:20] = 1.0
  crop = dataclasses.replace(IDENTITY, crop_scale=(0.3, 0.6))
  v1, _ = two_views(x, tf.constant([1, 1]), crop)
  assert float(tf.reduce_mean(v1)) > float(x.mean())


def test_blur_keeps_constant_images_and_smooths_noise():
  flat = np.full((3, 16, 16, 3), 0.5, np.float32)
  blur = dataclasses.replace(IDENTITY, blur_probability=1.0,
                             blur_sigma=(1.0, 2.0))
  v1, _ = two_views(flat, tf.constant([2, 3]), blur)
  # Zero padding darkens the border; the interior stays constant.
  np.testing.assert_allclose(v1.numpy()[:, 2:-2, 2:-2], 0.5, atol=1e-5)
  noise = images((3, 32, 32, 3))
  v1, _ = two_views(noise, tf.constant([2, 3]), blur)
  assert v1.numpy()[:, 4:-4, 4:-4].std() < noise[:, 4:-4, 4:-4].std() * 0.8


def test_default_for():
  assert not default_for("mnist").flip
  assert default_for("fashion_mnist").flip
  assert default_for("cifar10").crop_scale == (0.2, 1.0)
  assert default_for(1) == default_for("digits")
  assert default_for("my_folder", channels=1) == default_for(1)
  assert default_for("my_folder", channels=3) == default_for(3)
  with pytest.raises(UserError):
    default_for(0)


def test_bad_config_is_user_error():
  with pytest.raises(UserError, match="crop scale"):
    two_views(images((2, 8, 8, 1)), tf.constant([0, 0]),
              SslAugmentConfig(crop_scale=(0.0, 1.0)))


GRAYSCALE_EXTRAS = dataclasses.replace(
    IDENTITY, intensity_probability=1.0, gamma=0.5, noise_std=0.1,
    erase_probability=1.0, erase_scale=(0.1, 0.3))


def test_pixel_ops_are_deterministic_per_seed_and_stay_in_range():
  x = images((6, 28, 28, 1))
  a = two_views(x, tf.constant([3, 4]), GRAYSCALE_EXTRAS)
  b = tf.function(lambda im, s: two_views(im, s, GRAYSCALE_EXTRAS))(
      x, tf.constant([3, 4]))
  c = two_views(x, tf.constant([3, 5]), GRAYSCALE_EXTRAS)
  for i in range(2):
    np.testing.assert_allclose(a[i].numpy(), b[i].numpy(), atol=1e-6)
    assert not np.allclose(a[i].numpy(), c[i].numpy())
    assert 0.0 <= float(tf.reduce_min(a[i]))
    assert float(tf.reduce_max(a[i])) <= 1.0


def test_configs_without_the_new_ops_draw_the_views_they_always_did():
  # The pixel ops take their seeds from a fold of the view's seed, so the
  # geometry of a config that also erases is the geometry without erasing.
  x = images((4, 16, 16, 1))
  crop = dataclasses.replace(IDENTITY, crop_scale=(0.3, 0.6))
  plain = two_views(x, tf.constant([9, 9]), crop)[0].numpy()
  noisy = two_views(x, tf.constant([9, 9]),
                    dataclasses.replace(crop, noise_std=1e-4))[0].numpy()
  np.testing.assert_allclose(plain, noisy, atol=1e-3)


def test_erasing_sets_one_rectangle_to_one_grey_level():
  x = images((8, 20, 20, 1))
  erase = dataclasses.replace(IDENTITY, erase_probability=1.0,
                              erase_scale=(0.1, 0.2), erase_ratio=(0.5, 2.0))
  v1 = two_views(x, tf.constant([1, 2]), erase)[0].numpy()
  for view, image in zip(v1, x):
    changed = ~np.isclose(view, image, atol=1e-6)[..., 0]
    rows, cols = np.nonzero(changed)
    # A rectangle: its bounding box is all changed, about 10-20% of the area.
    box = changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert box.all()
    assert 0.05 * 400 <= changed.sum() <= 0.3 * 400
    assert np.ptp(view[changed]) < 1e-6  # one grey level


def test_intensity_jitter_keeps_black_background_and_pixel_order():
  # Brightness, contrast and gamma are monotone in the pixel value (for one
  # image), and gamma maps 0 to 0: no inversion, no new object pixels.
  x = np.zeros((8, 12, 12, 1), np.float32)
  x[:, 3:9, 3:9, 0] = np.linspace(0.2, 1.0, 36).reshape(6, 6)
  jitter = dataclasses.replace(IDENTITY, intensity_probability=1.0, gamma=0.5,
                               contrast=0.0)
  v1 = two_views(x, tf.constant([4, 2]), jitter)[0].numpy()
  np.testing.assert_array_equal(v1[:, :3], 0.0)
  inside = v1[:, 3:9, 3:9, 0].reshape(8, -1)
  assert (np.diff(inside, axis=1) >= -1e-6).all()
  assert not np.allclose(v1, x)


def test_intensity_jitter_is_for_one_channel_only():
  x = images((4, 12, 12, 3))
  jitter = dataclasses.replace(IDENTITY, intensity_probability=1.0, gamma=0.5)
  v1, _ = two_views(x, tf.constant([7, 8]), jitter)
  np.testing.assert_allclose(v1.numpy(), x, atol=1e-5)


def test_clothing_default_is_harder_than_digits():
  clothing, digits = default_for("fashion_mnist"), default_for("mnist")
  assert clothing.crop_scale[0] < digits.crop_scale[0]
  assert clothing.erase_probability > 0 and clothing.intensity_probability > 0
  assert digits.erase_probability == 0 and digits.intensity_probability == 0


@pytest.mark.parametrize("field,value,message", [
    ("gamma", 3.0, "gamma"), ("noise_std", -0.1, "noise_std"),
    ("erase_probability", 1.5, "erase_probability"),
    ("erase_scale", (0.0, 0.2), "erase scale"),
    ("erase_ratio", (2.0, 1.0), "erase ratio")])
def test_bad_pixel_op_settings_are_user_errors(field, value, message):
  with pytest.raises(UserError, match=message):
    dataclasses.replace(IDENTITY, **{field: value}).validate()
