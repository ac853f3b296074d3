"""SimCLR-style paired views, batched and keyed by a stateless seed.

`two_views(images, seed, config)` turns a batch of images in [0, 1] into two
independently augmented batches. Every random draw is a stateless op keyed
by the [2] int seed (split per view and per operation), so the views depend
on the seed alone: the same seed gives the same views inside or outside a
tf.function, and TensorFlow's global seed (reset by Keras model building)
never leaks in. The federated trainer can therefore derive a seed from
(round, client, step) and replay any step exactly.

Geometry (random resized crop, small translations and rotations,
horizontal flip) is one per-example affine transform applied with
`ImageProjectiveTransformV3`, so the whole batch is resampled in one op.
Colour jitter and random grayscale only apply to RGB images (for one
channel they are no-ops); single-channel images get intensity jitter
(brightness, contrast, gamma) instead, when asked for. Gaussian blur,
Gaussian noise and random erasing (Zhong et al. 2020) are optional; none of
the operations inverts or solarizes (a negative garment is not a garment
of the same kind in these datasets' photographs).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Tuple, Union

import tensorflow as tf

from fedclf.errors import UserError

# Datasets of centred handwritten digits or glyphs: no flips (a mirrored
# "2" is not a "2"), gentle crops (a 20% crop of a digit is a stroke, not a
# digit) and small shifts/rotations instead.
_DIGIT_DATASETS = ("mnist", "emnist", "usps", "digits")
# Clothing is left-right symmetric, so flips are label-preserving there.
_FLIPPABLE_GRAYSCALE_DATASETS = ("fashion_mnist",)

# ITU-R 601 luma weights, as tf.image.rgb_to_grayscale uses.
_LUMA = (0.2989, 0.5870, 0.1140)


@dataclasses.dataclass(frozen=True)
class SslAugmentConfig:
  """Augmentations of one view (SimCLR, Chen et al. 2020, Appendix A).

  Attributes:
    crop_scale: range of the crop's area as a fraction of the image.
    crop_ratio: range of the crop's aspect ratio (width / height).
    translate_fraction: extra shift of the crop centre, up to this fraction
      of the image side each way (zero padding outside the image).
    rotation_degrees: random rotation in [-r, r] degrees.
    flip: random horizontal flips (probability 0.5).
    jitter_probability: chance of colour jitter (RGB only).
    brightness, contrast, saturation: jitter strengths s; the factor is
      drawn from [1 - s, 1 + s].
    hue: hue shift drawn from [-hue, hue] (fraction of the colour wheel).
    grayscale_probability: chance of converting to grayscale (RGB only).
    blur_probability: chance of a Gaussian blur.
    blur_sigma: range of the blur's sigma, in pixels.
    intensity_probability: chance of intensity jitter of a single-channel
      image (brightness and contrast as above, then gamma); RGB images get
      colour jitter instead.
    gamma: the gamma exponent is exp(u), u uniform in
      [-log(1 + gamma), log(1 + gamma)].
    noise_std: additive Gaussian noise with a per-example std uniform in
      [0, noise_std] (0 = none).
    erase_probability: chance of erasing one random rectangle to a random
      grey level (random erasing / cutout).
    erase_scale: range of the erased area as a fraction of the image.
    erase_ratio: range of the erased rectangle's aspect ratio.
  """
  crop_scale: Tuple[float, float] = (0.5, 1.0)
  crop_ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
  translate_fraction: float = 0.0
  rotation_degrees: float = 0.0
  flip: bool = False
  jitter_probability: float = 0.8
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.4
  hue: float = 0.1
  grayscale_probability: float = 0.2
  blur_probability: float = 0.0
  blur_sigma: Tuple[float, float] = (0.1, 2.0)
  intensity_probability: float = 0.0
  gamma: float = 0.0
  noise_std: float = 0.0
  erase_probability: float = 0.0
  erase_scale: Tuple[float, float] = (0.02, 0.25)
  erase_ratio: Tuple[float, float] = (0.3, 3.3)

  def validate(self) -> None:
    lo, hi = self.crop_scale
    if not 0.0 < lo <= hi <= 1.0:
      raise UserError(f"crop scale must satisfy 0 < min <= max <= 1, got "
                      f"{self.crop_scale}")
    lo, hi = self.crop_ratio
    if not 0.0 < lo <= hi:
      raise UserError(f"crop ratio must satisfy 0 < min <= max, got "
                      f"{self.crop_ratio}")
    if not 0.0 <= self.translate_fraction < 0.5:
      raise UserError("translate_fraction must be in [0, 0.5)")
    if not 0.0 <= self.rotation_degrees <= 180.0:
      raise UserError("rotation_degrees must be in [0, 180]")
    for name in ("jitter_probability", "grayscale_probability",
                 "blur_probability", "intensity_probability",
                 "erase_probability"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise UserError(f"{name} must be in [0, 1]")
    for name in ("brightness", "contrast", "saturation"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise UserError(f"{name} must be in [0, 1]")
    if not 0.0 <= self.hue <= 0.5:
      raise UserError("hue must be in [0, 0.5]")
    lo, hi = self.blur_sigma
    if not 0.0 < lo <= hi:
      raise UserError(f"blur sigma must satisfy 0 < min <= max, got "
                      f"{self.blur_sigma}")
    self._validate_grayscale_and_erasing()

  def _validate_grayscale_and_erasing(self) -> None:
    if not 0.0 <= self.gamma <= 2.0:
      raise UserError(f"gamma must be in [0, 2], got {self.gamma}")
    if not 0.0 <= self.noise_std <= 0.5:
      raise UserError(f"noise_std must be in [0, 0.5], got {self.noise_std}")
    lo, hi = self.erase_scale
    if not 0.0 < lo <= hi < 1.0:
      raise UserError(f"erase scale must satisfy 0 < min <= max < 1, got "
                      f"{self.erase_scale}")
    lo, hi = self.erase_ratio
    if not 0.0 < lo <= hi:
      raise UserError(f"erase ratio must satisfy 0 < min <= max, got "
                      f"{self.erase_ratio}")


# Grayscale clothing: garments are left-right symmetric (flips), a quarter
# of a shirt is still a shirt (crops down to 25%), fabric tone varies
# (intensity jitter), and blur plus erasing hide the texture and part of
# the outline that two views would otherwise trivially share.
_CLOTHING = SslAugmentConfig(
    crop_scale=(0.25, 1.0), translate_fraction=0.0, rotation_degrees=10.0,
    flip=True, brightness=0.4, contrast=0.4, intensity_probability=0.8,
    gamma=0.5, blur_probability=0.3, blur_sigma=(0.1, 1.0),
    erase_probability=0.5, erase_scale=(0.02, 0.2))


def default_for(dataset_or_channels: Union[str, int],
                channels: Optional[int] = None) -> SslAugmentConfig:
  """Sensible augmentations for a dataset name or a channel count.

  A dataset name fedclf does not know (image_folder, plugins) is judged by
  `channels` when given: grayscale data gets the digit settings.

  Digits get gentle crops, small shifts and rotations and no flips;
  Fashion-MNIST `_CLOTHING`: flips, crops down to 25% of the area, intensity
  jitter, blur and random erasing (with the digit settings alone the views
  are too alike for the objective to teach more than a random encoder
  knows); RGB data (CIFAR-10 and unknown 3-channel datasets) SimCLR's CIFAR
  recipe: crops down to 20% of the area, flips, colour jitter 0.4/0.1 with
  p=0.8 and grayscale with p=0.2 (blur is off, as SimCLR does for 32x32
  images).
  """
  digits = SslAugmentConfig(crop_scale=(0.5, 1.0), translate_fraction=0.1,
                            rotation_degrees=10.0, flip=False)
  colour = SslAugmentConfig(crop_scale=(0.2, 1.0), flip=True)
  if isinstance(dataset_or_channels, bool):
    raise UserError(f"expected a dataset name or a channel count, got "
                    f"{dataset_or_channels!r}")
  if isinstance(dataset_or_channels, int):
    if dataset_or_channels == 3:
      return colour
    if dataset_or_channels >= 1:
      return digits
    raise UserError(f"channel count must be >= 1, got {dataset_or_channels}")
  name = str(dataset_or_channels)
  if name in _DIGIT_DATASETS:
    return digits
  if name in _FLIPPABLE_GRAYSCALE_DATASETS:
    return _CLOTHING
  if channels is not None:
    return default_for(int(channels))
  return colour


def _uniform(seed: tf.Tensor, batch: tf.Tensor, low: float,
             high: float) -> tf.Tensor:
  return tf.random.stateless_uniform([batch], seed, low, high, tf.float32)


def _chance(seed: tf.Tensor, batch: tf.Tensor, p: float) -> tf.Tensor:
  """[batch] booleans, each True with probability p."""
  return tf.random.stateless_uniform([batch], seed) < p


def _select(mask: tf.Tensor, yes: tf.Tensor, no: tf.Tensor) -> tf.Tensor:
  return tf.where(mask[:, None, None, None], yes, no)


def _geometry(images: tf.Tensor, seeds: tf.Tensor,
              config: SslAugmentConfig) -> tf.Tensor:
  """Random resized crop + shift + rotation + flip as one affine resample."""
  batch = tf.shape(images)[0]
  height = tf.cast(tf.shape(images)[1], tf.float32)
  width = tf.cast(tf.shape(images)[2], tf.float32)
  # Crop size as fractions of the sides (torchvision's RandomResizedCrop
  # draws area and log aspect ratio the same way; a side that would exceed
  # the image is clipped instead of redrawn, which keeps the op batched).
  area = _uniform(seeds[0], batch, *config.crop_scale)
  log_ratio = _uniform(seeds[1], batch, math.log(config.crop_ratio[0]),
                       math.log(config.crop_ratio[1]))
  ratio = tf.exp(log_ratio)
  crop_w = tf.minimum(tf.sqrt(area * ratio), 1.0)
  crop_h = tf.minimum(tf.sqrt(area / ratio), 1.0)
  # Crop centre (fractions), uniform over positions that stay inside.
  centre_x = crop_w / 2.0 + _uniform(seeds[2], batch, 0.0, 1.0) * (1.0 - crop_w)
  centre_y = crop_h / 2.0 + _uniform(seeds[3], batch, 0.0, 1.0) * (1.0 - crop_h)
  if config.translate_fraction:
    t = config.translate_fraction
    centre_x += _uniform(seeds[4], batch, -t, t)
    centre_y += _uniform(seeds[5], batch, -t, t)
  scale_x = crop_w
  scale_y = crop_h
  if config.flip:
    flip = _chance(seeds[6], batch, 0.5)
    scale_x = tf.where(flip, -scale_x, scale_x)
  if config.rotation_degrees:
    limit = config.rotation_degrees * math.pi / 180.0
    angle = _uniform(seeds[7], batch, -limit, limit)
  else:
    angle = tf.zeros([batch], tf.float32)
  cos, sin = tf.cos(angle), tf.sin(angle)
  # Output pixel (x, y) samples the input at
  #   [cx, cy] + R(angle) @ [scale_x * (x - ox), scale_y * (y - oy)]
  # where (ox, oy) is the output centre and (cx, cy) the crop centre, both
  # in pixel-index coordinates (pixel i covers [i, i + 1)).
  out_cx = (width - 1.0) / 2.0
  out_cy = (height - 1.0) / 2.0
  in_cx = centre_x * width - 0.5
  in_cy = centre_y * height - 0.5
  a0 = cos * scale_x
  a1 = -sin * scale_y
  b0 = sin * scale_x
  b1 = cos * scale_y
  a2 = in_cx - a0 * out_cx - a1 * out_cy
  b2 = in_cy - b0 * out_cx - b1 * out_cy
  zeros = tf.zeros_like(a0)
  transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms,
      output_shape=tf.shape(images)[1:3], fill_value=0.0,
      interpolation="BILINEAR", fill_mode="CONSTANT")


def _grayscale(images: tf.Tensor) -> tf.Tensor:
  """[B, H, W, 1] luma of RGB images."""
  return tf.reduce_sum(images * tf.constant(_LUMA, tf.float32), axis=-1,
                       keepdims=True)


def _colour(images: tf.Tensor, seeds: tf.Tensor,
            config: SslAugmentConfig) -> tf.Tensor:
  """Colour jitter (brightness, contrast, saturation, hue) then grayscale.

  SimCLR applies the four jitters in a random order; a fixed order keeps
  the op batched and differs only in second-order interactions.
  """
  batch = tf.shape(images)[0]

  def factor(seed, strength):
    return _uniform(seed, batch, 1.0 - strength, 1.0 + strength)[:, None, None,
                                                                 None]

  x = images
  if config.brightness:
    x = tf.clip_by_value(x * factor(seeds[0], config.brightness), 0.0, 1.0)
  if config.contrast:
    mean = tf.reduce_mean(_grayscale(x), axis=[1, 2, 3], keepdims=True)
    x = tf.clip_by_value((x - mean) * factor(seeds[1], config.contrast) + mean,
                         0.0, 1.0)
  if config.saturation:
    gray = _grayscale(x)
    x = tf.clip_by_value(
        (x - gray) * factor(seeds[2], config.saturation) + gray, 0.0, 1.0)
  if config.hue:
    hsv = tf.image.rgb_to_hsv(x)
    shift = _uniform(seeds[3], batch, -config.hue, config.hue)[:, None, None]
    hue = tf.math.floormod(hsv[..., 0] + shift, 1.0)
    x = tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], -1))
  jittered = _select(_chance(seeds[4], batch, config.jitter_probability), x,
                     images)
  if config.grayscale_probability:
    gray = tf.tile(_grayscale(jittered), [1, 1, 1, 3])
    jittered = _select(_chance(seeds[5], batch, config.grayscale_probability),
                       gray, jittered)
  return jittered


def _blur(images: tf.Tensor, seeds: tf.Tensor,
          config: SslAugmentConfig) -> tf.Tensor:
  """Gaussian blur with a per-example sigma, applied with probability p."""
  shape = tf.shape(images)
  batch, channels = shape[0], images.shape[-1]
  # Kernel about 10% of the image side, as SimCLR; at least 3 taps.
  radius = max(1, int(images.shape[1] or 32) // 20)
  sigma = _uniform(seeds[0], batch, *config.blur_sigma)
  taps = tf.range(-radius, radius + 1, dtype=tf.float32)
  kernel = tf.exp(-tf.square(taps)[None, :] / (2.0 * tf.square(sigma[:, None])))
  kernel /= tf.reduce_sum(kernel, axis=1, keepdims=True)  # [B, K]
  # One depthwise convolution for the whole batch: examples become channels,
  # each with its own kernel (repeated over the image's channels).
  kernel = tf.repeat(kernel, channels, axis=0)  # [B * C, K]
  stacked = tf.transpose(images, [1, 2, 0, 3])  # [H, W, B, C]
  stacked = tf.reshape(stacked, [1, shape[1], shape[2], batch * channels])
  k = tf.shape(kernel)[1]
  horizontal = tf.reshape(tf.transpose(kernel), [1, k, batch * channels, 1])
  vertical = tf.reshape(tf.transpose(kernel), [k, 1, batch * channels, 1])
  blurred = tf.nn.depthwise_conv2d(stacked, horizontal, [1, 1, 1, 1], "SAME")
  blurred = tf.nn.depthwise_conv2d(blurred, vertical, [1, 1, 1, 1], "SAME")
  blurred = tf.reshape(blurred, [shape[1], shape[2], batch, channels])
  blurred = tf.transpose(blurred, [2, 0, 1, 3])
  return _select(_chance(seeds[1], batch, config.blur_probability), blurred,
                 images)


def _intensity(images: tf.Tensor, seeds: tf.Tensor,
               config: SslAugmentConfig) -> tf.Tensor:
  """Brightness, contrast and gamma jitter of single-channel images, with
  probability `intensity_probability` (the grayscale stand-in for colour
  jitter: it changes the ink/fabric tone, never which pixels are object)."""
  batch = tf.shape(images)[0]

  def per_example(values):
    return values[:, None, None, None]

  x = images
  if config.brightness:
    x = x * per_example(_uniform(seeds[0], batch, 1.0 - config.brightness,
                                 1.0 + config.brightness))
  if config.contrast:
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * per_example(_uniform(
        seeds[1], batch, 1.0 - config.contrast, 1.0 + config.contrast)) + mean
  x = tf.clip_by_value(x, 0.0, 1.0)
  if config.gamma:
    limit = math.log1p(config.gamma)
    # 0 ** gamma is 0 for gamma > 0: the background stays black.
    x = tf.pow(x, per_example(tf.exp(_uniform(seeds[2], batch, -limit,
                                              limit))))
  return _select(_chance(seeds[3], batch, config.intensity_probability), x,
                 images)


def _noise(images: tf.Tensor, seeds: tf.Tensor,
           config: SslAugmentConfig) -> tf.Tensor:
  """Additive Gaussian noise, per-example std uniform in [0, noise_std]."""
  std = _uniform(seeds[0], tf.shape(images)[0], 0.0, config.noise_std)
  noise = tf.random.stateless_normal(tf.shape(images), seeds[1])
  return images + noise * std[:, None, None, None]


def _erase(images: tf.Tensor, seeds: tf.Tensor,
           config: SslAugmentConfig) -> tf.Tensor:
  """Random erasing: one rectangle per chosen example set to a random grey
  level (area and aspect ratio drawn as in the crop)."""
  batch = tf.shape(images)[0]
  height = tf.cast(tf.shape(images)[1], tf.float32)
  width = tf.cast(tf.shape(images)[2], tf.float32)
  area = _uniform(seeds[0], batch, *config.erase_scale)
  ratio = tf.exp(_uniform(seeds[1], batch, math.log(config.erase_ratio[0]),
                          math.log(config.erase_ratio[1])))
  # Sides as fractions of the image, clipped as the crop's are.
  erase_w = tf.minimum(tf.sqrt(area * ratio), 1.0)
  erase_h = tf.minimum(tf.sqrt(area / ratio), 1.0)
  left = _uniform(seeds[2], batch, 0.0, 1.0) * (1.0 - erase_w)
  top = _uniform(seeds[3], batch, 0.0, 1.0) * (1.0 - erase_h)
  # Pixel centres as fractions of the sides.
  xs = (tf.range(width) + 0.5) / width
  ys = (tf.range(height) + 0.5) / height
  inside_x = (xs[None, :] >= left[:, None]) & (
      xs[None, :] < (left + erase_w)[:, None])
  inside_y = (ys[None, :] >= top[:, None]) & (
      ys[None, :] < (top + erase_h)[:, None])
  inside = inside_y[:, :, None, None] & inside_x[:, None, :, None]
  erase = inside & _chance(seeds[4], batch, config.erase_probability)[
      :, None, None, None]
  grey = _uniform(seeds[5], batch, 0.0, 1.0)[:, None, None, None]
  return tf.where(erase, grey * tf.ones_like(images), images)


def _pixel_ops(x: tf.Tensor, seed: tf.Tensor,
               config: SslAugmentConfig) -> tf.Tensor:
  """Intensity jitter (one channel), noise and erasing, each only when
  configured; their seeds are folded in from the view's seed so that
  configurations without them draw exactly the views they always did."""
  seeds = tf.random.experimental.stateless_split(
      tf.random.experimental.stateless_fold_in(seed, 1), 3)
  if config.intensity_probability and x.shape[-1] == 1:
    x = _intensity(x, tf.random.experimental.stateless_split(seeds[0], 4),
                   config)
  if config.noise_std:
    x = tf.clip_by_value(
        _noise(x, tf.random.experimental.stateless_split(seeds[1], 2),
               config), 0.0, 1.0)
  if config.erase_probability:
    x = _erase(x, tf.random.experimental.stateless_split(seeds[2], 6), config)
  return x


def augment_batch(images: tf.Tensor, seed: tf.Tensor,
                  config: SslAugmentConfig) -> tf.Tensor:
  """One augmented view of a [B, H, W, C] batch in [0, 1]."""
  images = tf.convert_to_tensor(images, tf.float32)
  if images.shape.rank != 4:
    raise ValueError(f"expected images [batch, H, W, C], got {images.shape}")
  seeds = tf.random.experimental.stateless_split(seed, 3)
  x = _geometry(images, tf.random.experimental.stateless_split(seeds[0], 8),
                config)
  # Colour ops are defined on RGB; a single channel has no colour to jitter.
  if images.shape[-1] == 3:
    x = _colour(x, tf.random.experimental.stateless_split(seeds[1], 6),
                config)
  if config.blur_probability:
    x = _blur(x, tf.random.experimental.stateless_split(seeds[2], 2), config)
  # Erasing comes last, after blur, as in Zhong et al. (a sharp-edged hole).
  x = _pixel_ops(x, seed, config)
  return tf.clip_by_value(x, 0.0, 1.0)


def two_views(images: tf.Tensor, seed: tf.Tensor,
              config: SslAugmentConfig = SslAugmentConfig()
              ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Two independently augmented views of a batch of images.

  Args:
    images: float32 [B, H, W, C] in [0, 1] (C = 1 or 3; other channel counts
      get geometry and blur only).
    seed: int32/int64 tensor of shape [2]; the views depend on it alone.
    config: the augmentations.

  Returns:
    (view1, view2), each float32 [B, H, W, C] in [0, 1].
  """
  config.validate()  # Python-side, so it runs once per trace.
  seed = tf.convert_to_tensor(seed)
  if seed.dtype not in (tf.int32, tf.int64):
    seed = tf.cast(seed, tf.int64)
  seeds = tf.random.experimental.stateless_split(seed, 2)
  return (augment_batch(images, seeds[0], config),
          augment_batch(images, seeds[1], config))
