"""Tests for fedclf.metrics, cross-checked against sklearn."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from fedclf import metrics
from fedclf.errors import UserError


def _random_predictions(seed, n=500, num_classes=6, never_predicted=(4,),
                        never_true=()):
  rng = np.random.default_rng(seed)
  true_classes = [c for c in range(num_classes) if c not in never_true]
  pred_classes = [c for c in range(num_classes) if c not in never_predicted]
  y_true = rng.choice(true_classes, size=n)
  # Mostly right, so the numbers are not all near chance.
  y_pred = np.where(rng.random(n) < 0.6, y_true, rng.choice(pred_classes, n))
  y_pred = np.where(np.isin(y_pred, never_predicted),
                    rng.choice(pred_classes, n), y_pred)
  return y_true, y_pred


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("never_predicted,never_true", [
    ((), ()),
    ((4,), ()),
    ((1, 4), (5,)),
])
def test_report_matches_sklearn(seed, never_predicted, never_true):
  k = 6
  y_true, y_pred = _random_predictions(seed, num_classes=k,
                                       never_predicted=never_predicted,
                                       never_true=never_true)
  for c in never_predicted:
    assert c not in y_pred
  report = metrics.classification_report(y_true, y_pred, k)
  labels = np.arange(k)
  kw = dict(labels=labels, zero_division=0)
  assert report["accuracy"] == pytest.approx(
      skm.accuracy_score(y_true, y_pred))
  assert report["macro_precision"] == pytest.approx(
      skm.precision_score(y_true, y_pred, average="macro", **kw))
  assert report["macro_recall"] == pytest.approx(
      skm.recall_score(y_true, y_pred, average="macro", **kw))
  assert report["macro_f1"] == pytest.approx(
      skm.f1_score(y_true, y_pred, average="macro", **kw))
  assert report["weighted_f1"] == pytest.approx(
      skm.f1_score(y_true, y_pred, average="weighted", **kw))
  p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, **kw)
  per_class = report["per_class"]
  assert [x["class"] for x in per_class] == list(range(k))
  np.testing.assert_allclose([x["precision"] for x in per_class], p)
  np.testing.assert_allclose([x["recall"] for x in per_class], r)
  np.testing.assert_allclose([x["f1"] for x in per_class], f)
  assert [x["support"] for x in per_class] == s.tolist()
  for c in never_predicted:
    assert per_class[c]["precision"] == 0.0
  expected_cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
  assert report["confusion_matrix"] == expected_cm.tolist()


def test_report_is_json_serializable_and_named():
  y_true, y_pred = _random_predictions(3, num_classes=3, never_predicted=())
  report = metrics.classification_report(y_true, y_pred, 3,
                                         class_names=["cat", "dog", "owl"])
  decoded = json.loads(json.dumps(report))
  assert decoded == report
  assert [x["name"] for x in report["per_class"]] == ["cat", "dog", "owl"]
  for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1",
              "weighted_f1"):
    assert type(report[key]) is float  # pylint: disable=unidiomatic-typecheck
  assert type(report["per_class"][0]["support"]) is int  # pylint: disable=unidiomatic-typecheck


def test_perfect_predictions():
  y = np.array([0, 1, 2, 2, 1])
  report = metrics.classification_report(y, y, 3)
  assert report["accuracy"] == 1.0
  assert report["macro_f1"] == 1.0
  assert report["weighted_f1"] == 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_confusion_matrix_matches_sklearn(seed):
  y_true, y_pred = _random_predictions(seed, num_classes=7)
  cm = metrics.confusion_matrix(y_true, y_pred, 7)
  assert cm.dtype == np.int64
  assert cm.shape == (7, 7)
  np.testing.assert_array_equal(
      cm, skm.confusion_matrix(y_true, y_pred, labels=np.arange(7)))


@pytest.mark.parametrize("args", [
    (np.array([0, 1]), np.array([0]), 2),  # Length mismatch.
    (np.array([0, 2]), np.array([0, 1]), 2),  # Label out of range.
    (np.array([0, -1]), np.array([0, 1]), 2),
    (np.array([0.5, 1.0]), np.array([0, 1]), 2),
    (np.array([[0, 1]]), np.array([[0, 1]]), 2),
    (np.array([0, 1]), np.array([0, 1]), 0),
])
def test_invalid_inputs_are_user_errors(args):
  with pytest.raises(UserError):
    metrics.confusion_matrix(*args)
  with pytest.raises(UserError):
    metrics.classification_report(*args)


def test_report_errors():
  with pytest.raises(UserError, match="0 examples"):
    metrics.classification_report(np.array([], np.int64),
                                  np.array([], np.int64), 2)
  with pytest.raises(UserError, match="class names"):
    metrics.classification_report([0, 1], [0, 1], 2, class_names=["a"])


@pytest.mark.parametrize("n,folds", [(10, 2), (103, 5), (7, 7)])
def test_kfold_covers_everything(n, folds):
  splits = metrics.kfold_indices(n, folds, seed=0)
  assert len(splits) == folds
  vals = np.concatenate([v for _, v in splits])
  np.testing.assert_array_equal(np.sort(vals), np.arange(n))
  sizes = [v.size for _, v in splits]
  assert max(sizes) - min(sizes) <= 1
  for train, val in splits:
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(n))


def test_kfold_deterministic_and_seeded():
  a = metrics.kfold_indices(50, 5, seed=1)
  b = metrics.kfold_indices(50, 5, seed=1)
  c = metrics.kfold_indices(50, 5, seed=2)
  assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
  assert any(not np.array_equal(x[1], y[1]) for x, y in zip(a, c))


def test_kfold_stratified_keeps_ratios():
  rng = np.random.default_rng(0)
  labels = rng.permutation(np.repeat([0, 1, 2], [500, 300, 200]))
  splits = metrics.kfold_indices(labels.size, 5, seed=3, labels=labels)
  vals = np.concatenate([v for _, v in splits])
  np.testing.assert_array_equal(np.sort(vals), np.arange(labels.size))
  for _, val in splits:
    np.testing.assert_array_equal(np.bincount(labels[val], minlength=3),
                                  [100, 60, 40])
  # Uneven classes still differ by at most one per fold.
  labels = rng.integers(0, 4, 237)
  splits = metrics.kfold_indices(labels.size, 6, seed=0, labels=labels)
  per_fold = np.array([np.bincount(labels[v], minlength=4)
                       for _, v in splits])
  assert np.all(per_fold.max(axis=0) - per_fold.min(axis=0) <= 1)
  sizes = per_fold.sum(axis=1)
  assert sizes.max() - sizes.min() <= 1


@pytest.mark.parametrize("n,folds", [(10, 1), (10, 11), (5, 0)])
def test_kfold_invalid(n, folds):
  with pytest.raises(UserError, match="folds"):
    metrics.kfold_indices(n, folds, seed=0)


def test_kfold_labels_length_mismatch():
  with pytest.raises(UserError, match="labels"):
    metrics.kfold_indices(10, 2, seed=0, labels=np.zeros(9))


def test_holdout_split():
  train, val = metrics.holdout_split(100, 0.2, seed=0)
  assert val.size == 20 and train.size == 80
  np.testing.assert_array_equal(np.sort(np.concatenate([train, val])),
                                np.arange(100))
  assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
  again = metrics.holdout_split(100, 0.2, seed=0)
  np.testing.assert_array_equal(val, again[1])
  other = metrics.holdout_split(100, 0.2, seed=1)
  assert not np.array_equal(val, other[1])


def test_holdout_stratified_keeps_ratios():
  rng = np.random.default_rng(1)
  labels = rng.permutation(np.repeat([0, 1, 2, 3], [400, 300, 200, 100]))
  train, val = metrics.holdout_split(labels.size, 0.1, seed=0, labels=labels)
  np.testing.assert_array_equal(np.bincount(labels[val], minlength=4),
                                [40, 30, 20, 10])
  np.testing.assert_array_equal(np.bincount(labels[train], minlength=4),
                                [360, 270, 180, 90])
  # Fractional quotas: exact total, each class within one of its quota.
  labels = rng.integers(0, 7, 333)
  train, val = metrics.holdout_split(labels.size, 0.25, seed=2, labels=labels)
  assert val.size == round(333 * 0.25)
  assert train.size + val.size == 333
  quotas = np.bincount(labels, minlength=7) * val.size / 333
  counts = np.bincount(labels[val], minlength=7)
  assert np.all(np.abs(counts - quotas) < 1)


@pytest.mark.parametrize("n,fraction", [
    (100, 0.0), (100, 1.0), (100, -0.1), (100, 1.5), (10, 0.01), (10, 0.99),
    (1, 0.5),
])
def test_holdout_invalid(n, fraction):
  with pytest.raises(UserError):
    metrics.holdout_split(n, fraction, seed=0)


@pytest.mark.parametrize("k,names,dtype", [
    (4, ["a", "b", "c", "d"], np.int64),
    (3, None, np.float64),
    (50, None, np.int64),
])
def test_plot_confusion_matrix_writes_png(tmp_path, k, names, dtype):
  rng = np.random.default_rng(0)
  cm = rng.integers(0, 20, (k, k)).astype(dtype)
  path = tmp_path / "out" / "cm.png"
  metrics.plot_confusion_matrix(cm, str(path), class_names=names, title="cm")
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_confusion_matrix_invalid(tmp_path):
  with pytest.raises(UserError):
    metrics.plot_confusion_matrix(np.zeros((2, 3)), str(tmp_path / "x.png"))
  with pytest.raises(UserError):
    metrics.plot_confusion_matrix(np.zeros((2, 2)), str(tmp_path / "x.png"),
                                  class_names=["a"])
