"""FixMatch's consistency training (Sohn et al. 2020): weak and strong views
of a batch, and the masked pseudo-label loss between them.

For an unlabelled batch, the model's prediction on a weakly augmented view
(small shifts) becomes a hard pseudo-label where its softmax probability
reaches the threshold tau; the prediction on a strongly augmented view of
the same images (bigger shifts, rotations, crops, intensity changes and a
cut-out square) is trained towards it:

    L_u = 1 / (mu B) * sum_b 1[max p(x_weak_b) >= tau] * CE(argmax
          p(x_weak_b), p(x_strong_b))

Shared by the centralized `fixmatch` method (`fedclf.adapt.methods.
fixmatch`) and the federated one (`fedclf.adapt.unlabelled_target_clients`).
The geometry (and, for RGB images, SimCLR's colour jitter) is
`fedclf.ssl.augment`'s stateless batched affine resample; the intensity
jitter and the cut-out, which SimCLR's augmentations do not have for
grayscale images, are here. Every draw is a stateless op keyed by a [2]
seed, so a step's views depend on its seed alone (resume replays them).
"""

from __future__ import annotations

from typing import Optional, Tuple

import tensorflow as tf

from fedclf.data.preprocess import Normalization
from fedclf.ssl.augment import augment_batch
from fedclf.ssl.augment import SslAugmentConfig

# FixMatch's weak augmentation for digits: translations up to 12.5% of the
# side (no flips: a mirrored "2" is no "2"), after the zoom below.
WEAK = SslAugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
                        translate_fraction=0.125, jitter_probability=0.0,
                        grayscale_probability=0.0)
# Both views first zoom each image by a factor drawn from this range (< 1
# shrinks the digit). The digit domains differ in scale: USPS's digits
# fill the frame, MNIST's fill the central 20x20 of 28x28; a source model
# that has seen both scales starts self-training from better labels.
ZOOM = (0.7, 1.15)
# The strong view's geometry; RGB images also get SimCLR's colour jitter
# (p=0.8) and grayscale (p=0.2) from these settings.
STRONG = SslAugmentConfig(crop_scale=(0.6, 1.0), translate_fraction=0.15,
                          rotation_degrees=25.0)
# Brightness and contrast factors in [1 - s, 1 + s], every channel count.
STRONG_INTENSITY = 0.5
# Side of the cut-out square as a fraction of the image side (FixMatch's
# Cutout: up to half; at least a quarter here so it always bites).
CUTOUT_SIDE = (0.25, 0.5)
# The cut-out square's value, in [0, 1] pixels (FixMatch fills with gray).
CUTOUT_FILL = 0.5


def _intensity(images: tf.Tensor, seed: tf.Tensor,
               strength: float) -> tf.Tensor:
  """Per-example brightness then contrast (about the image mean)."""
  batch = tf.shape(images)[0]
  seeds = tf.random.experimental.stateless_split(seed, 2)
  bright = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[0],
                                       1.0 - strength, 1.0 + strength)
  contrast = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[1],
                                         1.0 - strength, 1.0 + strength)
  x = tf.clip_by_value(images * bright, 0.0, 1.0)
  mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
  return tf.clip_by_value((x - mean) * contrast + mean, 0.0, 1.0)


def _cutout(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """A square of CUTOUT_SIDE (fraction of the side) at a random centre
  per example, set to CUTOUT_FILL."""
  shape = tf.shape(images)
  batch = shape[0]
  height = tf.cast(shape[1], tf.float32)
  width = tf.cast(shape[2], tf.float32)
  draws = tf.random.stateless_uniform([3, batch], seed)
  side = CUTOUT_SIDE[0] + draws[0] * (CUTOUT_SIDE[1] - CUTOUT_SIDE[0])
  half_h = side * height / 2.0
  half_w = side * width / 2.0
  rows = tf.range(height)[None, :, None] + 0.5
  cols = tf.range(width)[None, None, :] + 0.5
  inside = tf.logical_and(
      tf.abs(rows - (draws[1] * height)[:, None, None]) < half_h[:, None,
                                                                  None],
      tf.abs(cols - (draws[2] * width)[:, None, None]) < half_w[:, None,
                                                                 None])
  return tf.where(inside[..., None], CUTOUT_FILL, images)


def zoom(images: tf.Tensor, seed: tf.Tensor,
         factors: Tuple[float, float] = ZOOM) -> tf.Tensor:
  """Each image scaled about its centre by a factor drawn from `factors`
  (below 1 shrinks it, with black borders; above 1 enlarges it)."""
  shape = tf.shape(images)
  batch = shape[0]
  factor = tf.random.stateless_uniform([batch], seed, *factors)
  # The output pixel p samples the input at c + (p - c) / factor.
  step = 1.0 / factor
  centre_y = (tf.cast(shape[1], tf.float32) - 1.0) / 2.0
  centre_x = (tf.cast(shape[2], tf.float32) - 1.0) / 2.0
  zeros = tf.zeros_like(step)
  transforms = tf.stack([step, zeros, centre_x * (1.0 - step), zeros, step,
                         centre_y * (1.0 - step), zeros, zeros], axis=1)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms, output_shape=shape[1:3],
      fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")


def weak_view(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """The weak view of [B, H, W, C] images in [0, 1]: zoom, then shift."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  return augment_batch(zoom(images, seeds[0]), seeds[1], WEAK)


def strong_view(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """The strong view of [B, H, W, C] images in [0, 1]: zoom, geometry (and
  RGB colour jitter), intensity jitter, then a cut-out square."""
  seeds = tf.random.experimental.stateless_split(seed, 4)
  x = augment_batch(zoom(images, seeds[3]), seeds[0], STRONG)
  x = _intensity(x, seeds[1], STRONG_INTENSITY)
  return _cutout(x, seeds[2])


def standardized_views(images: tf.Tensor, seed: tf.Tensor,
                       normalization: Normalization, strong: bool
                       ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Views of standardized images, standardized again.

  The training sets are standardized once up front; the augmentations
  work on [0, 1] pixels (a shift fills with black, not the mean), so the
  images are taken back to pixels, augmented and standardized again.

  Returns:
    (weak view, strong view); the strong one is None when not `strong`.
  """
  mean = tf.constant(normalization.mean, tf.float32)
  std = tf.constant(normalization.std, tf.float32)
  pixels = tf.clip_by_value(images * std + mean, 0.0, 1.0)
  seeds = tf.random.experimental.stateless_split(seed, 2)
  weak = (weak_view(pixels, seeds[0]) - mean) / std
  if not strong:
    return weak, None
  return weak, (strong_view(pixels, seeds[1]) - mean) / std


def aligned(probs: tf.Tensor, prior: tf.Tensor,
            running_mean: tf.Tensor) -> tf.Tensor:
  """ReMixMatch's distribution alignment (Berthelot et al. 2020): each row
  of `probs` [N, K] scaled by prior / running_mean [K] and renormalized, so
  a class the model predicts more often than the prior says loses
  confidence (and a model sliding towards one class is pulled back)."""
  scaled = probs * (prior / tf.maximum(running_mean, 1e-6))
  return scaled / tf.reduce_sum(scaled, axis=-1, keepdims=True)


def masked_pseudo_label_loss(weak_logits: tf.Tensor, strong_logits: tf.Tensor,
                             threshold: float,
                             alignment: Optional[Tuple[tf.Tensor,
                                                       tf.Tensor]] = None
                             ) -> Tuple[tf.Tensor, tf.Tensor]:
  """FixMatch's unlabelled loss (see the module docstring).

  Args:
    weak_logits: [N, K] the model's logits on the weak views; no gradient
      flows through them (the pseudo-labels are targets).
    strong_logits: [N, K] its logits on the strong views of the same images.
    threshold: tau, the softmax probability a pseudo-label needs.
    alignment: (prior, running mean of the weak-view probabilities), both
      [K], to align the weak-view probabilities first (`aligned`); None:
      as they are.

  Returns:
    (loss, mask): the masked cross-entropy summed over the confident
    examples and divided by N (all of them, as the paper does), and the
    [N] float mask of the confident ones.
  """
  probs = tf.nn.softmax(tf.stop_gradient(weak_logits))
  if alignment is not None:
    probs = aligned(probs, *alignment)
  pseudo_labels = tf.argmax(probs, axis=-1)
  mask = tf.cast(tf.reduce_max(probs, axis=-1) >= threshold, tf.float32)
  cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
      pseudo_labels, strong_logits)
  return tf.reduce_mean(mask * cross_entropy), mask
