"""MNIST-M (Ganin et al. 2016): MNIST digits blended over colour photo patches.

Ganin et al. build MNIST-M by taking, for every MNIST digit, a random patch
of a BSDS500 photo and setting each pixel of each colour channel to
|patch - digit|, which inverts the patch's colours inside the strokes. The
widely used reference script (`create_mnistm.py`) binarizes the digit first
(any non-zero pixel is stroke), and so does this module.

BSDS500 is not available offline, so the photos are the real CIFAR-10
images (the 4,000/1,000 subset in the shared data, or the full set when
present): a random square crop of a random image is resized to the digit's
size. Crops are between `min_crop_fraction` and all of the 32-pixel side, so
small crops are upsampled, which gives the smooth large-scale texture that
a digit-sized patch of a 481x321 BSDS photo has. Training digits take
backgrounds from the CIFAR training images and test digits from the CIFAR
test images, so no test background was seen in training.

Everything is a pure function of the seed: the same seed gives the same
images bit for bit.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import tensorflow as tf

from fedclf.errors import UserError

# Crops span [MIN_CROP_FRACTION, 1] of the background side: at 0.5 a
# 32-pixel CIFAR image gives 16-32 pixel crops, resized to 28x28.
MIN_CROP_FRACTION = 0.5

_CHUNK = 8192  # images per crop_and_resize call, to bound temporary memory


@dataclasses.dataclass(frozen=True)
class Crops:
  """Where each image's background comes from.

  Attributes:
    which: int32 [N] background index per image.
    boxes: float32 [N, 4] crop corners (y1, x1, y2, x2), normalized so that
      0 and 1 are the centres of the first and last pixel
      (`tf.image.crop_and_resize`'s convention).
  """
  which: np.ndarray
  boxes: np.ndarray

  def take(self, indices: np.ndarray) -> "Crops":
    return Crops(self.which[indices], self.boxes[indices])


def draw_crops(num_images: int, backgrounds_shape: Sequence[int], seed,
               min_crop_fraction: float = MIN_CROP_FRACTION) -> Crops:
  """Draws a background and a square crop of it for each of `num_images`.

  Drawing for a whole dataset at once and then `Crops.take`-ing a subset
  gives image i the same background whatever subset is built, so a limited
  MNIST-M slice holds exactly those images of the full MNIST-M.

  Args:
    num_images: number of digits.
    backgrounds_shape: (M, h, w, 3) of the background photos.
    seed: anything `np.random.default_rng` accepts (an int or a sequence of
      ints); fixes every choice.
    min_crop_fraction: smallest crop side as a fraction of the background's
      shorter side, in (0, 1].
  """
  if not 0.0 < min_crop_fraction <= 1.0:
    raise UserError(f"min_crop_fraction must be in (0, 1], got "
                    f"{min_crop_fraction}")
  count, bg_h, bg_w = (int(d) for d in backgrounds_shape[:3])
  if count < 1:
    raise UserError("MNIST-M needs at least one background image")
  rng = np.random.default_rng(seed)
  which = rng.integers(0, count, num_images)
  full = min(bg_h, bg_w)
  smallest = max(1, int(round(min_crop_fraction * full)))
  side = rng.integers(smallest, full + 1, num_images)
  top = np.floor(rng.random(num_images) * (bg_h - side + 1)).astype(np.int64)
  left = np.floor(rng.random(num_images) * (bg_w - side + 1)).astype(np.int64)
  scale_y, scale_x = max(bg_h - 1, 1), max(bg_w - 1, 1)
  boxes = np.stack([top / scale_y, left / scale_x, (top + side - 1) / scale_y,
                    (left + side - 1) / scale_x], axis=1).astype(np.float32)
  return Crops(which.astype(np.int32), boxes)


def blend(digits: np.ndarray, backgrounds: np.ndarray,
          crops: Crops) -> np.ndarray:
  """|patch - binarized digit| per channel, each patch resized to the digit.

  Args:
    digits: float [N, H, W, 1] (or [N, H, W]) images in [0, 1], white
      strokes on black.
    backgrounds: float [M, h, w, 3] colour photos in [0, 1].
    crops: one crop per digit (`draw_crops`).

  Returns:
    float32 [N, H, W, 3] images in [0, 1].
  """
  digits = np.asarray(digits, np.float32)
  if digits.ndim == 3:
    digits = digits[..., None]
  backgrounds = np.asarray(backgrounds, np.float32)
  if digits.ndim != 4 or digits.shape[-1] != 1:
    raise UserError(f"MNIST-M needs grayscale digits [N, H, W, 1], got "
                    f"shape {digits.shape}")
  if backgrounds.ndim != 4 or backgrounds.shape[-1] != 3:
    raise UserError(f"MNIST-M needs colour backgrounds [M, h, w, 3], got "
                    f"shape {backgrounds.shape}")
  if len(crops.which) != len(digits):
    raise ValueError(f"{len(crops.which)} crops for {len(digits)} digits")
  n, height, width = digits.shape[:3]
  out = np.empty((n, height, width, 3), np.float32)
  bg = tf.constant(backgrounds)
  for start in range(0, n, _CHUNK):
    stop = min(start + _CHUNK, n)
    patches = tf.image.crop_and_resize(
        bg, crops.boxes[start:stop], crops.which[start:stop],
        (height, width), method="bilinear").numpy()
    strokes = (digits[start:stop] > 0).astype(np.float32)
    out[start:stop] = np.abs(patches - strokes)
  return np.clip(out, 0.0, 1.0)


def make_mnist_m(digits: np.ndarray, backgrounds: np.ndarray, seed,
                 min_crop_fraction: float = MIN_CROP_FRACTION) -> np.ndarray:
  """MNIST-M images of `digits` (see `draw_crops` and `blend`).

  Returns:
    float32 [N, H, W, 3] in [0, 1]; the same for the same arguments.
  """
  digits = np.asarray(digits, np.float32)
  crops = draw_crops(len(digits), np.shape(backgrounds), seed,
                     min_crop_fraction)
  return blend(digits, backgrounds, crops)
