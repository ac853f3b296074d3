"""How alike two attribution maps are (per image).

Adebayo et al. (2018) compare saliency maps by the Spearman rank
correlation of their absolute values and by SSIM; both are used for the
randomization sanity check and for comparing two models' maps. Maps are
[N, H, W] magnitudes (`fedclf.interpret.attribution.heatmap`).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from scipy import stats
import tensorflow as tf

# SSIM's Gaussian window; smaller images (8x8 digits) use their own size.
_SSIM_WINDOW = 11


def spearman(a: np.ndarray, b: np.ndarray,
             mask: Optional[np.ndarray] = None) -> np.ndarray:
  """Rank correlation of |a| and |b| per map, over the pixels where `mask`
  ([N, H, W] bool) is set (default all); NaN where a map is constant there
  (e.g. an all-zero Grad-CAM), for which a rank order does not exist."""
  a = np.abs(np.asarray(a, np.float64)).reshape(len(a), -1)
  b = np.abs(np.asarray(b, np.float64)).reshape(len(b), -1)
  keep = (np.ones_like(a, bool) if mask is None else
          np.asarray(mask, bool).reshape(len(a), -1))
  out = np.full(len(a), np.nan)
  for i, (x, y, k) in enumerate(zip(a, b, keep)):
    x, y = x[k], y[k]
    if len(x) > 1 and np.ptp(x) > 0 and np.ptp(y) > 0:
      out[i] = stats.spearmanr(x, y).correlation
  return out


def unit_scale(maps: np.ndarray) -> np.ndarray:
  """Each map's magnitude divided by its maximum (all-zero maps stay 0)."""
  maps = np.abs(np.asarray(maps, np.float32))
  peak = maps.reshape(len(maps), -1).max(axis=1)
  return maps / np.maximum(peak, 1e-12)[:, None, None]


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Structural similarity of the unit-scaled maps, per map."""
  a, b = unit_scale(a)[..., None], unit_scale(b)[..., None]
  window = min(_SSIM_WINDOW, a.shape[1], a.shape[2])
  return tf.image.ssim(tf.constant(a), tf.constant(b), max_val=1.0,
                       filter_size=window).numpy().astype(np.float64)


def foreground(images: np.ndarray) -> np.ndarray:
  """[N, H, W] mask of the pixels that are not black in any channel."""
  return np.asarray(images).max(axis=-1) > 0


def map_similarity(a: np.ndarray, b: np.ndarray,
               mask: Optional[np.ndarray] = None) -> Dict:
  """Both measures per map and their means (NaNs left out of the mean and
  counted). With `mask` (e.g. `foreground`), also the rank correlation
  inside it: input-times-gradient methods such as integrated gradients are
  exactly zero wherever the input equals the baseline (MNIST's black
  background), so over the whole image their rank correlation stays high
  whatever the model; inside the digit it shows whether the model matters.
  """
  rank = spearman(a, b)
  structure = ssim(a, b)
  report = {
      "spearman_abs": _mean(rank),
      "ssim": _mean(structure),
      "undefined_spearman": int(np.isnan(rank).sum()),
      "per_example": {"spearman_abs": rank.tolist(),
                      "ssim": structure.tolist()},
  }
  if mask is not None:
    inside = spearman(a, b, mask)
    report["spearman_abs_foreground"] = _mean(inside)
    report["per_example"]["spearman_abs_foreground"] = inside.tolist()
  return report


def _mean(values: np.ndarray) -> float:
  values = values[~np.isnan(values)]
  return float(values.mean()) if len(values) else float("nan")
