"""Confusion-matrix heat map for results pages."""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np

from fedclf.errors import UserError
from fedclf.results.figure_style import results_figure

# Beyond these sizes per-cell numbers and per-class tick labels become an
# unreadable smear, so they are dropped and only the colours remain.
_MAX_ANNOTATED_CLASSES = 20
_MAX_LABELLED_CLASSES = 40


def plot_confusion_matrix(cm: np.ndarray,
                          path: Union[str, os.PathLike],
                          class_names: Optional[Sequence[str]] = None,
                          title: str = "") -> None:
  """Writes `cm` ([true, pred] counts) as a PNG heat map to `path`."""
  cm = np.asarray(cm)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
    raise UserError(f"confusion matrix must be square, got shape {cm.shape}")
  k = cm.shape[0]
  if class_names is not None and len(class_names) != k:
    raise UserError(f"got {len(class_names)} class names for {k} classes")
  size = min(max(4.0, 0.45 * k + 2.0), 20.0)
  with results_figure(os.fspath(path), (size + 1.0, size)) as fig:
    _draw_confusion_matrix(fig, cm, class_names, title)


def _draw_confusion_matrix(fig, cm: np.ndarray,
                           class_names: Optional[Sequence[str]],
                           title: str) -> None:
  k = cm.shape[0]
  ax = fig.add_subplot(1, 1, 1)
  image = ax.imshow(cm, interpolation="nearest", cmap="Blues")
  fig.colorbar(image, ax=ax, label="examples")
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  if title:
    ax.set_title(title)
  if k <= _MAX_LABELLED_CLASSES:
    names = ([str(x) for x in class_names] if class_names is not None else
             [str(c) for c in range(k)])
    ax.set_xticks(np.arange(k))
    ax.set_yticks(np.arange(k))
    ax.set_xticklabels(names, rotation=90 if k > 10 else 0)
    ax.set_yticklabels(names)
  if k <= _MAX_ANNOTATED_CLASSES:
    threshold = cm.max() / 2.0 if cm.size else 0.0
    # Counts print as integers; a normalised matrix with two decimals.
    fmt = (str if np.issubdtype(cm.dtype, np.integer) else
           (lambda v: f"{v:.2f}"))
    for i in range(k):
      for j in range(k):
        ax.text(j, i, fmt(cm[i, j]), ha="center", va="center", fontsize=8,
                color="white" if cm[i, j] > threshold else "black")
  ax.grid(False)
