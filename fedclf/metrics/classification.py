"""Confusion matrix and per-class precision/recall/F1, in pure numpy.

Definitions match `sklearn.metrics` with `labels=range(num_classes)` and
`zero_division=0`: a ratio with a zero denominator is 0.0, and the macro
averages run over all `num_classes` classes, including ones that occur in
neither y_true nor y_pred (those score 0). sklearn is deliberately not a
runtime dependency; the tests cross-check against it.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from fedclf.errors import UserError


def _as_class_ids(values, name: str, num_classes: int) -> np.ndarray:
  values = np.asarray(values)
  if values.ndim != 1:
    raise UserError(f"{name} must be 1-D, got shape {values.shape}")
  if values.size and not np.issubdtype(values.dtype, np.integer):
    if (not np.issubdtype(values.dtype, np.number) or
        not np.all(np.isfinite(values)) or
        not np.all(values == np.round(values))):
      raise UserError(f"{name} must hold integer class ids, got dtype "
                      f"{values.dtype}")
  values = values.astype(np.int64)
  if values.size and (values.min() < 0 or values.max() >= num_classes):
    raise UserError(f"{name} has class ids outside [0, {num_classes}): "
                    f"min {values.min()}, max {values.max()}")
  return values


def _check_inputs(y_true, y_pred,
                  num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
  if (not isinstance(num_classes, (int, np.integer)) or
      isinstance(num_classes, bool) or num_classes < 1):
    raise UserError(f"num_classes must be an integer >= 1, got "
                    f"{num_classes!r}")
  y_true = _as_class_ids(y_true, "y_true", num_classes)
  y_pred = _as_class_ids(y_pred, "y_pred", num_classes)
  if y_true.shape != y_pred.shape:
    raise UserError(f"y_true and y_pred differ in length: {y_true.shape[0]} "
                    f"vs {y_pred.shape[0]}")
  return y_true, y_pred


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
  """Counts[true, pred] as an int64 [num_classes, num_classes] array."""
  y_true, y_pred = _check_inputs(y_true, y_pred, num_classes)
  flat = np.bincount(y_true * num_classes + y_pred,
                     minlength=num_classes * num_classes)
  return flat.reshape(num_classes, num_classes).astype(np.int64)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  """numerator / denominator, with 0.0 where the denominator is 0."""
  numerator = np.asarray(numerator, dtype=np.float64)
  denominator = np.asarray(denominator, dtype=np.float64)
  out = np.zeros_like(numerator)
  np.divide(numerator, denominator, out=out, where=denominator != 0)
  return out


def classification_report(
    y_true, y_pred, num_classes: int,
    class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Accuracy, per-class and averaged precision/recall/F1.

  Args:
    y_true: True class ids, shape [n], n >= 1.
    y_pred: Predicted class ids, shape [n].
    num_classes: Number of classes; ids must lie in [0, num_classes).
    class_names: Optional display name per class; defaults to "0", "1", ...

  Returns:
    A JSON-serializable dict (Python floats/ints and lists only) with keys
    accuracy, macro_precision, macro_recall, macro_f1, weighted_f1 (F1
    averaged with support weights), per_class (a list of dicts with class,
    name, precision, recall, f1, support) and confusion_matrix ([true][pred]
    nested lists).
  """
  y_true, y_pred = _check_inputs(y_true, y_pred, num_classes)
  if y_true.size == 0:
    raise UserError("cannot compute a classification report on 0 examples")
  if class_names is None:
    names = [str(c) for c in range(num_classes)]
  else:
    names = [str(x) for x in class_names]
    if len(names) != num_classes:
      raise UserError(f"got {len(names)} class names for {num_classes} "
                      f"classes")
  cm = confusion_matrix(y_true, y_pred, num_classes)
  tp = np.diag(cm).astype(np.float64)
  support = cm.sum(axis=1)
  predicted = cm.sum(axis=0)
  precision = _safe_divide(tp, predicted)
  recall = _safe_divide(tp, support)
  f1 = _safe_divide(2 * precision * recall, precision + recall)
  total = int(support.sum())
  per_class = [{
      "class": c,
      "name": names[c],
      "precision": float(precision[c]),
      "recall": float(recall[c]),
      "f1": float(f1[c]),
      "support": int(support[c]),
  } for c in range(num_classes)]
  return {
      "accuracy": float(tp.sum() / total),
      "macro_precision": float(precision.mean()),
      "macro_recall": float(recall.mean()),
      "macro_f1": float(f1.mean()),
      "weighted_f1": float((f1 * support).sum() / total),
      "per_class": per_class,
      "confusion_matrix": cm.tolist(),
  }
