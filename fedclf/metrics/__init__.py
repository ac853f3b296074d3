"""Evaluation metrics and validation splits (pure numpy).

    from fedclf import metrics
    report = metrics.classification_report(y_true, y_pred, num_classes=10)
"""

from fedclf.metrics.classification import classification_report
from fedclf.metrics.classification import confusion_matrix
from fedclf.metrics.plots import plot_confusion_matrix
from fedclf.metrics.splits import holdout_split
from fedclf.metrics.splits import kfold_indices

__all__ = [
    "classification_report",
    "confusion_matrix",
    "holdout_split",
    "kfold_indices",
    "plot_confusion_matrix",
]
