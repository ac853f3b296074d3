"""tf.data input pipelines: normalization, seeded augmentation, batching.

Shuffling and augmentation are fixed by the `seed` argument alone: the order
is a numpy permutation and each example's augmentation uses stateless random
ops keyed by a per-example seed drawn from the same generator. TensorFlow's
global seed (which Keras model building sets) cannot change them, so a
rerun or a resumed run sees exactly the same batches. Training loops pass a
new seed per epoch (see `fedclf.train.loop`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from fedclf.errors import UserError

AUGMENTATIONS = ("crop", "flip", "rotate", "jitter")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  # Pad by this fraction of the height (at least 1 pixel), then random-crop
  # back: 4 pixels on 32x32 CIFAR, as in the ResNet paper.
  crop_padding_fraction: float = 0.0
  flip: bool = False  # horizontal flips: right for natural images, not digits
  rotation_degrees: float = 0.0
  jitter: float = 0.0  # brightness/contrast (and saturation for RGB) strength

  @property
  def enabled(self) -> bool:
    return bool(self.crop_padding_fraction or self.flip or self.rotation_degrees or
                self.jitter)

  @classmethod
  def from_names(cls, names: Sequence[str]) -> "AugmentConfig":
    """The usual settings for named augmentations."""
    unknown = sorted(set(names) - set(AUGMENTATIONS))
    if unknown:
      raise UserError(f"unknown augmentation {unknown[0]!r}; choose from: "
                      f"{', '.join(AUGMENTATIONS)}")
    return cls(
        crop_padding_fraction=0.125 if "crop" in names else 0.0,
        flip="flip" in names,
        rotation_degrees=15.0 if "rotate" in names else 0.0,
        jitter=0.3 if "jitter" in names else 0.0)


def _rotate(image: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
  """Rotates one HWC image about its centre (bilinear, zero fill)."""
  shape = tf.shape(image)
  h = tf.cast(shape[0], tf.float32)
  w = tf.cast(shape[1], tf.float32)
  cos, sin = tf.cos(angle), tf.sin(angle)
  # Output pixel (x, y) samples input at the inverse rotation about centre.
  x_offset = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
  y_offset = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
  transform = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None],
      transforms=transform[None],
      output_shape=shape[:2],
      fill_value=0.0,
      interpolation="BILINEAR",
      fill_mode="CONSTANT")[0]


def augment_image(image: tf.Tensor, seed: tf.Tensor,
                  config: AugmentConfig) -> tf.Tensor:
  """Applies the configured augmentations to one image in [0, 1]."""
  seeds = tf.random.experimental.stateless_split(seed, 6)
  if config.crop_padding_fraction:
    p = max(1, int(round(image.shape[0] * config.crop_padding_fraction)))
    padded = tf.pad(image, [[p, p], [p, p], [0, 0]])
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seeds[0])
  if config.flip:
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
  if config.rotation_degrees:
    limit = config.rotation_degrees * math.pi / 180.0
    angle = tf.random.stateless_uniform([], seeds[2], -limit, limit)
    image = _rotate(image, angle)
  if config.jitter:
    image = tf.image.stateless_random_brightness(image, config.jitter * 0.5,
                                                 seeds[3])
    image = tf.image.stateless_random_contrast(image, 1.0 - config.jitter,
                                               1.0 + config.jitter, seeds[4])
    if image.shape[-1] == 3:
      image = tf.image.stateless_random_saturation(image, 1.0 - config.jitter,
                                                   1.0 + config.jitter,
                                                   seeds[5])
  return tf.clip_by_value(image, 0.0, 1.0)


INPUT_SCALINGS = ("standardize", "unit")


def check_input_scaling(scaling: str) -> None:
  if scaling not in INPUT_SCALINGS:
    raise UserError(f"unknown input_scaling {scaling!r}; choose one of: "
                    f"{', '.join(INPUT_SCALINGS)}")


@dataclasses.dataclass(frozen=True)
class Normalization:
  """Per-channel statistics of a training set."""
  mean: Tuple[float, ...]
  std: Tuple[float, ...]

  @classmethod
  def from_images(cls, images: np.ndarray) -> "Normalization":
    mean = images.mean(axis=(0, 1, 2))
    std = np.maximum(images.std(axis=(0, 1, 2)), 1e-6)
    return cls(tuple(float(m) for m in mean), tuple(float(s) for s in std))

  @classmethod
  def for_scaling(cls, scaling: str, images: np.ndarray) -> "Normalization":
    """`standardize`: zero mean, unit variance per channel over `images`;
    `unit`: the pixels as loaded, in [0, 1] (as many papers feed them)."""
    check_input_scaling(scaling)
    if scaling == "unit":
      channels = images.shape[-1]
      return cls((0.0,) * channels, (1.0,) * channels)
    return cls.from_images(images)

  def apply(self, images):
    return (images - np.asarray(self.mean, np.float32)) / np.asarray(
        self.std, np.float32)


def make_pipeline(x: np.ndarray,
                  y: np.ndarray,
                  batch_size: int,
                  normalization: Normalization,
                  *,
                  shuffle: bool = False,
                  seed: int = 0,
                  augment: Optional[AugmentConfig] = None,
                  cache: bool = True,
                  drop_remainder: bool = False) -> tf.data.Dataset:
  """Batches (image, label) pairs: augment in [0,1], then normalize."""
  if batch_size < 1:
    raise UserError(f"batch size must be >= 1, got {batch_size}")
  x = np.asarray(x, np.float32)
  y = np.asarray(y, np.int64)
  rng = np.random.default_rng(seed)
  if shuffle:
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
  if augment is not None and augment.enabled:
    seeds = rng.integers(0, 2**62, size=(len(y), 2), dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((x, y, seeds))
    if cache:
      ds = ds.cache()
    ds = ds.map(lambda im, lab, s: (augment_image(im, s, augment), lab),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if cache:
      ds = ds.cache()
  mean = tf.constant(normalization.mean, tf.float32)
  std = tf.constant(normalization.std, tf.float32)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  ds = ds.map(lambda im, lab: ((im - mean) / std, lab),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)
