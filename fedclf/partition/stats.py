"""Describing a partition: label histograms, a text table, a heat map, a summary.

These are what results and logs show about a split, so that a reader can
see how non-IID the clients really were rather than trusting the config.
"""

from __future__ import annotations

import os
from typing import Dict, Sequence, Union

import numpy as np

from fedclf.errors import UserError
from fedclf.results.record import atomic_output


def label_histogram(labels: np.ndarray, parts: Sequence[np.ndarray],
                    num_classes: int) -> np.ndarray:
  """Per-client class counts.

  Args:
    labels: Class id per example, shape [num_examples].
    parts: Index array per client, as returned by `partition`.
    num_classes: Number of classes; every label must be below it.

  Returns:
    int64 array [num_clients, num_classes]; row i sums to len(parts[i]).
  """
  labels = np.asarray(labels).reshape(-1).astype(np.int64)
  if num_classes < 1:
    raise UserError(f"num_classes must be >= 1, got {num_classes}")
  hist = np.zeros((len(parts), num_classes), dtype=np.int64)
  for i, part in enumerate(parts):
    client_labels = labels[np.asarray(part, dtype=np.int64)]
    if client_labels.size and (client_labels.min() < 0 or
                               client_labels.max() >= num_classes):
      raise UserError(f"client {i} has labels outside [0, {num_classes})")
    hist[i] = np.bincount(client_labels, minlength=num_classes)
  return hist


def format_histogram(hist: np.ndarray, max_rows: int = 20) -> str:
  """A plain-text table: client, size, then one count column per class.

  Only the first `max_rows` clients are listed; a final "..." line says how
  many were left out, so huge splits (EMNIST has thousands of writers) stay
  readable in logs.
  """
  hist = np.asarray(hist)
  num_clients, num_classes = hist.shape
  sizes = hist.sum(axis=1)
  header = ["client", "size"] + [str(c) for c in range(num_classes)]
  shown = min(num_clients, max(int(max_rows), 0))
  rows = [[str(i), str(int(sizes[i]))] + [str(int(v)) for v in hist[i]]
          for i in range(shown)]
  widths = [max([len(header[j])] + [len(r[j]) for r in rows])
            for j in range(len(header))]

  def fmt(cells):
    return "  ".join(cell.rjust(w) for cell, w in zip(cells, widths))

  lines = [fmt(header)] + [fmt(r) for r in rows]
  if shown < num_clients:
    lines.append(f"... ({num_clients - shown} more clients)")
  return "\n".join(lines)


def plot_histogram(hist: np.ndarray, path: Union[str, os.PathLike],
                   title: str = "") -> None:
  """Writes a clients x classes heat map of `hist` as a PNG to `path`."""
  # Imported lazily and used without pyplot: importing matplotlib is slow,
  # and pyplot's global backend/figure state would leak into callers.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from matplotlib.ticker import MaxNLocator

  hist = np.asarray(hist)
  num_clients, num_classes = hist.shape
  width = min(max(4.0, 0.35 * num_classes + 2.0), 20.0)
  height = min(max(3.0, 0.25 * num_clients + 1.5), 20.0)
  fig = Figure(figsize=(width, height))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  image = ax.imshow(hist, aspect="auto", interpolation="nearest",
                    cmap="viridis")
  fig.colorbar(image, ax=ax, label="examples")
  # Client and class ids are integers; default ticks would show "2.5".
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.yaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_xlabel("class")
  ax.set_ylabel("client")
  if title:
    ax.set_title(title)
  directory = os.path.dirname(os.fspath(path))
  if directory:
    os.makedirs(directory, exist_ok=True)
  fig.tight_layout()
  with atomic_output(path) as tmp:
    fig.savefig(tmp, format="png", dpi=100)


def partition_summary(hist: np.ndarray) -> Dict[str, Union[int, float]]:
  """Scalar statistics of a split, JSON-serializable.

  Returns:
    num_clients, num_classes, min_size, max_size, mean_size, std_size,
    mean_classes_per_client (classes with >= 1 example), and label_skew: the
    mean over clients of the total-variation distance
    0.5 * sum_c |p_client(c) - p_global(c)| between a client's label
    distribution and the pooled one (0 = IID, near 1 = disjoint labels).
  """
  hist = np.asarray(hist, dtype=np.float64)
  num_clients, num_classes = hist.shape
  sizes = hist.sum(axis=1)
  total = sizes.sum()
  nonempty = sizes > 0
  if total > 0 and np.any(nonempty):
    global_dist = hist.sum(axis=0) / total
    client_dist = hist[nonempty] / sizes[nonempty, None]
    tv = 0.5 * np.abs(client_dist - global_dist).sum(axis=1)
    label_skew = float(tv.mean())
  else:
    label_skew = 0.0
  return {
      "num_clients": int(num_clients),
      "num_classes": int(num_classes),
      "min_size": int(sizes.min()) if num_clients else 0,
      "max_size": int(sizes.max()) if num_clients else 0,
      "mean_size": float(sizes.mean()) if num_clients else 0.0,
      "std_size": float(sizes.std()) if num_clients else 0.0,
      "mean_classes_per_client":
          float((hist > 0).sum(axis=1).mean()) if num_clients else 0.0,
      "label_skew": label_skew,
  }
