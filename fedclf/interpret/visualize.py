"""PNG figures for interpretation: attribution grids, the randomization
check, model comparisons, the architecture diagram, first-layer filters
and activations.

matplotlib is used through Figure/FigureCanvasAgg, not pyplot, so nothing
here touches global figure state (as `fedclf.metrics.plots`).
"""

from __future__ import annotations

import math
import os
import shutil
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.interpret.attribution import tapped_forward
from fedclf.interpret.similarity import unit_scale
from fedclf.results.record import atomic_output


def _figure(width: float, height: float):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str) -> None:
  with atomic_output(path) as tmp:
    fig.savefig(tmp, dpi=110)


def _show_image(ax, image: np.ndarray) -> None:
  """A [H,W,C] image in [0,1]: grayscale for one channel."""
  if image.shape[-1] == 1:
    ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
  else:
    ax.imshow(np.clip(image, 0.0, 1.0))


def _overlay(ax, image: np.ndarray, heat: np.ndarray) -> None:
  """The map in colour over the dimmed input, opaque where it is strong."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  ax.imshow(image.mean(axis=-1), cmap="gray", vmin=0.0, vmax=2.0)
  colours = colormaps["jet"](heat)
  colours[..., 3] = np.clip(heat * 1.5, 0.0, 0.9)
  ax.imshow(colours)


def _clean(ax) -> None:
  ax.set_xticks([])
  ax.set_yticks([])


def _show_map(ax, heat: np.ndarray) -> None:
  """A [H,W] map already scaled to [0,1]."""
  ax.imshow(heat, cmap="inferno", vmin=0.0, vmax=1.0)


def _grid_with_inputs(images: np.ndarray, titles: Sequence[str], cols: int):
  """A figure with one row per example, its input in the first column;
  returns (figure, cell) where cell(row, col) makes the axes of a column."""
  fig = _figure(1.6 * cols, 1.7 * len(images) + 0.6)

  def cell(row: int, col: int):
    ax = fig.add_subplot(len(images), cols, row * cols + 1 + col)
    _clean(ax)
    return ax

  for row, image in enumerate(images):
    ax = cell(row, 0)
    _show_image(ax, image)
    ax.set_title(titles[row], fontsize=7)
  return fig, cell


def plot_attribution_grid(path: str, images: np.ndarray,
                          titles: Sequence[str],
                          maps: Dict[str, np.ndarray],
                          suptitle: str = "") -> None:
  """Rows: examples; columns: input, then per method its map and the map
  over the input. `images` are display images [N,H,W,C] in [0,1], `maps`
  method -> [N,H,W] magnitudes (each scaled to its own maximum)."""
  fig, cell = _grid_with_inputs(images, titles, 1 + 2 * len(maps))
  for j, (method, values) in enumerate(maps.items()):
    scaled = unit_scale(values)
    for row, image in enumerate(images):
      map_ax, overlay_ax = cell(row, 1 + 2 * j), cell(row, 2 + 2 * j)
      _show_map(map_ax, scaled[row])
      _overlay(overlay_ax, image, scaled[row])
      if row == 0:
        map_ax.set_title(method, fontsize=7)
        overlay_ax.set_title("overlay", fontsize=7)
  if suptitle:
    fig.suptitle(suptitle, fontsize=9)
  _save(fig, path)


def plot_randomization_curves(path: str, steps: Sequence[str],
                              report: Dict[str, List[Dict]],
                              title: str) -> None:
  """Mean similarity to the trained model's maps (Spearman of |map|, the
  same inside the digit when measured, SSIM) per cascading randomization
  step, one line per method."""
  measures = [("spearman_abs", "Spearman rank corr. of |map|"),
              ("spearman_abs_foreground", "same, inside the digit"),
              ("ssim", "SSIM")]
  first = next(iter(report.values()))[0]
  measures = [(key, name) for key, name in measures if key in first]
  fig = _figure(4.6 * len(measures), 3.8)
  labels = ["trained"] + list(steps)
  for k, (key, name) in enumerate(measures):
    ax = fig.add_subplot(1, len(measures), k + 1)
    for method, entries in report.items():
      ax.plot(range(len(labels)), [1.0] + [e[key] for e in entries],
              marker="o", label=method)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    ax.set_xlabel("randomized from the top through layer", fontsize=8)
    ax.set_ylabel(name)
    ax.axhline(0.0, color="gray", linewidth=0.5)
    ax.set_ylim(-0.5, 1.05)
    ax.grid(alpha=0.3)
    if k == 0:
      ax.legend(fontsize=8)
  fig.suptitle(title, fontsize=10)
  _save(fig, path)


def plot_randomization_maps(path: str, image: np.ndarray, steps: Sequence[str],
                            original: Dict[str, np.ndarray],
                            randomized: Dict[str, List[np.ndarray]],
                            title: str) -> None:
  """One example: rows are methods, columns the trained model and each
  randomization step (as Adebayo et al.'s Figure 2)."""
  methods = list(original)
  cols = 2 + len(steps)
  fig = _figure(1.5 * cols, 1.6 * len(methods) + 0.6)
  for r, method in enumerate(methods):
    ax = fig.add_subplot(len(methods), cols, r * cols + 1)
    _show_image(ax, image)
    ax.set_ylabel(method, fontsize=7)
    _clean(ax)
    sequence = [original[method]] + list(randomized[method])
    for c, maps in enumerate(sequence):
      ax = fig.add_subplot(len(methods), cols, r * cols + 2 + c)
      _show_map(ax, unit_scale(maps[:1])[0])
      _clean(ax)
      if r == 0:
        ax.set_title("trained" if c == 0 else f"-> {steps[c - 1]}",
                     fontsize=7)
  fig.suptitle(title, fontsize=9)
  _save(fig, path)


def plot_comparison(path: str, images: np.ndarray, titles: Sequence[str],
                    names: Sequence[str], maps_a: Dict[str, np.ndarray],
                    maps_b: Dict[str, np.ndarray],
                    per_example: Dict[str, Dict], suptitle: str) -> None:
  """Rows: examples; per method two columns (model A, model B), B's titled
  with the pair's Spearman rank correlation."""
  fig, cell = _grid_with_inputs(images, titles, 1 + 2 * len(maps_a))
  for j, method in enumerate(maps_a):
    rhos = per_example[method]["per_example"]["spearman_abs"]
    for k, maps in enumerate((maps_a, maps_b)):
      scaled = unit_scale(maps[method])
      for row in range(len(images)):
        ax = cell(row, 1 + 2 * j + k)
        _show_map(ax, scaled[row])
        header = f"{method}\n{names[k]}\n" if row == 0 else ""
        ax.set_title(header + (f"rho={rhos[row]:.2f}" if k else ""),
                     fontsize=6)
  fig.suptitle(suptitle, fontsize=9)
  _save(fig, path)


def plot_architecture(model: tf.keras.Model, path: str) -> None:
  """Keras plot_model with nested models expanded (needs graphviz `dot`)."""
  if shutil.which("dot") is None:
    raise UserError("graphviz's 'dot' program is not installed (apt-get "
                    "install graphviz); pass --noarchitecture to skip the "
                    "architecture diagram")
  try:
    import pydot  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise UserError("pydot is not installed (pip install pydot); pass "
                    "--noarchitecture to skip the diagram") from None
  with atomic_output(path) as tmp:
    tf.keras.utils.plot_model(model, to_file=tmp, show_shapes=True,
                              show_layer_names=True, expand_nested=True,
                              dpi=80)
    if not os.path.getsize(tmp):
      raise UserError(f"plot_model wrote no {path} (is graphviz working?)")


def _tile(fig, tiles: np.ndarray, cols: int, titles: Sequence[str],
          cmap: str) -> None:
  rows = math.ceil(len(tiles) / cols)
  for i, tile in enumerate(tiles):
    ax = fig.add_subplot(rows, cols, i + 1)
    if tile.ndim == 3 and tile.shape[-1] == 3:
      ax.imshow(tile)
    else:
      ax.imshow(tile if tile.ndim == 2 else tile[..., 0], cmap=cmap)
    _clean(ax)
    if titles:
      ax.set_title(titles[i], fontsize=6)


def conv_kernel(model: tf.keras.Model, layer_name: str) -> np.ndarray:
  """The kernel [kh, kw, in, out] of a (possibly nested) conv layer."""
  return _find_layer(model, layer_name).get_weights()[0]


def _find_layer(model: tf.keras.Model, name: str) -> tf.keras.layers.Layer:
  for layer in model.layers:
    if layer.name == name:
      return layer
    if isinstance(layer, tf.keras.Model):
      try:
        return _find_layer(layer, name)
      except KeyError:
        pass
  raise KeyError(name)


def plot_filters(kernel: np.ndarray, path: str, title: str) -> None:
  """A conv kernel [kh, kw, in, out] as one tile per output filter (RGB
  for 3 input channels, else the mean over inputs), each min-max scaled."""
  tiles = np.moveaxis(kernel, -1, 0)  # [out, kh, kw, in]
  if tiles.shape[-1] != 3:
    tiles = tiles.mean(axis=-1)
  low = tiles.reshape(len(tiles), -1).min(axis=1)
  high = tiles.reshape(len(tiles), -1).max(axis=1)
  shape = (-1,) + (1,) * (tiles.ndim - 1)
  tiles = (tiles - low.reshape(shape)) / np.maximum(high - low,
                                                    1e-12).reshape(shape)
  cols = min(8, len(tiles))
  fig = _figure(1.0 * cols, 1.0 * math.ceil(len(tiles) / cols) + 0.5)
  _tile(fig, tiles, cols, [str(i) for i in range(len(tiles))], "gray")
  fig.suptitle(title, fontsize=9)
  _save(fig, path)


def plot_activations(activations: Dict[str, np.ndarray], image: np.ndarray,
                     path: str, title: str, max_channels: int = 32) -> None:
  """One image's feature maps: a block per layer (first `max_channels`)."""
  blocks = [("input", image[None, ..., 0] if image.shape[-1] == 1
             else image[None])]
  for name, act in activations.items():
    blocks.append((name, np.moveaxis(act, -1, 0)[:max_channels]))
  cols = 8
  row_counts = [math.ceil(len(tiles) / cols) for _, tiles in blocks]
  fig = _figure(1.0 * cols, 1.05 * sum(row_counts) + 0.5 * len(blocks))
  subfigs = fig.subfigures(len(blocks), 1, height_ratios=row_counts)
  for sub, (name, tiles) in zip(np.atleast_1d(subfigs), blocks):
    _tile(sub, tiles, cols, [], "viridis")
    sub.suptitle(name, fontsize=8)
  fig.suptitle(title, fontsize=9)
  _save(fig, path)


def layer_activations(model: tf.keras.Model, image: np.ndarray,
                      layer_names: Sequence[str]) -> Dict[str, np.ndarray]:
  """Activations [H', W', channels] of named (possibly nested) layers for
  one model input image [H, W, C]."""
  out = {}
  for name in layer_names:
    activations, _ = tapped_forward(model, name)(image[None])
    out[name] = np.asarray(activations)[0]
  return out

