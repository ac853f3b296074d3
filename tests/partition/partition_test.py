"""Tests for fedclf.partition."""

import json

import numpy as np
import pytest

from fedclf import partition as fp
from fedclf.errors import UserError
from fedclf.registry import PARTITIONERS
from fedclf.registry import UnknownNameError

NUM_CLASSES = 10
NUM_WRITERS = 40


def _data(seed: int = 123, n: int = 1000):
  """Imbalanced labels and writer ids (every writer has some examples)."""
  rng = np.random.default_rng(seed)
  probs = np.linspace(1.0, 3.0, NUM_CLASSES)
  labels = rng.choice(NUM_CLASSES, size=n, p=probs / probs.sum())
  writers = np.concatenate(
      [np.arange(NUM_WRITERS), rng.integers(0, NUM_WRITERS, n - NUM_WRITERS)])
  return labels, rng.permutation(writers) + 1000


def _balanced(per_class: int = 100):
  return np.repeat(np.arange(NUM_CLASSES), per_class)


def _assert_valid(parts, n, num_clients):
  assert len(parts) == num_clients
  for p in parts:
    assert p.dtype == np.int64
    assert p.size > 0
    assert np.all(np.diff(p) > 0)  # Sorted, no duplicates within a client.
  flat = np.concatenate(parts)
  assert flat.size == n
  np.testing.assert_array_equal(np.sort(flat), np.arange(n))


@pytest.mark.parametrize("name", PARTITIONERS.names())
@pytest.mark.parametrize("num_clients", [1, 7, 20])
def test_covers_every_index_once(name, num_clients):
  labels, writers = _data()
  config = fp.PartitionConfig(num_clients=num_clients, seed=3)
  parts = fp.partition(name, labels, config, client_ids=writers)
  _assert_valid(parts, labels.size, num_clients)


@pytest.mark.parametrize("name", PARTITIONERS.names())
def test_deterministic_and_seed_dependent(name):
  labels, writers = _data()
  config = fp.PartitionConfig(num_clients=10, seed=5)
  a = fp.partition(name, labels, config, client_ids=writers)
  b = fp.partition(name, labels.copy(), config, client_ids=writers.copy())
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  other = fp.partition(name, labels, fp.PartitionConfig(num_clients=10, seed=6),
                       client_ids=writers)
  assert any(not np.array_equal(x, y) for x, y in zip(a, other))


def test_builtins_registered():
  for name in ("iid", "dirichlet", "shards", "quantity_skew", "natural"):
    assert name in PARTITIONERS


def test_iid_sizes_even():
  labels, _ = _data(n=1003)
  parts = fp.partition("iid", labels, fp.PartitionConfig(num_clients=10))
  sizes = [p.size for p in parts]
  assert max(sizes) - min(sizes) <= 1


def test_dirichlet_small_alpha_more_skewed():
  labels = _balanced()

  def skew(alpha):
    config = fp.PartitionConfig(num_clients=10, seed=1,
                                params=fp.DirichletParams(alpha))
    hist = fp.label_histogram(labels, fp.partition("dirichlet", labels, config),
                              NUM_CLASSES)
    return fp.partition_summary(hist)["label_skew"]

  low, high = skew(0.05), skew(100.0)
  assert low > 0.5
  assert high < 0.15
  assert low > high


@pytest.mark.parametrize("min_examples", [1, 5, 20])
def test_dirichlet_min_examples_even_when_infeasible_by_chance(min_examples):
  # Tiny alpha with many clients essentially never draws a valid split, so
  # this exercises the bounded retries and the deterministic fix-up.
  labels = _balanced(50)
  config = fp.PartitionConfig(num_clients=25, seed=0,
                              min_examples_per_client=min_examples,
                              params=fp.DirichletParams(0.001))
  parts = fp.partition("dirichlet", labels, config)
  _assert_valid(parts, labels.size, 25)
  assert min(p.size for p in parts) >= min_examples


def test_dirichlet_extreme_min_examples_is_exactly_even():
  labels = _balanced(10)
  config = fp.PartitionConfig(num_clients=20, min_examples_per_client=5,
                              params=fp.DirichletParams(0.01))
  parts = fp.partition("dirichlet", labels, config)
  assert [p.size for p in parts] == [5] * 20


def test_shards_at_most_shards_per_client_labels():
  labels = _balanced()
  config = fp.PartitionConfig(num_clients=50, seed=4,
                              params=fp.ShardsParams(shards_per_client=2))
  parts = fp.partition("shards", labels, config)
  _assert_valid(parts, labels.size, 50)
  hist = fp.label_histogram(labels, parts, NUM_CLASSES)
  assert np.all((hist > 0).sum(axis=1) <= 2)
  assert all(p.size == 20 for p in parts)


def test_shards_remainder_covered():
  labels, _ = _data(n=1009)
  config = fp.PartitionConfig(num_clients=12,
                              params=fp.ShardsParams(shards_per_client=3))
  parts = fp.partition("shards", labels, config)
  _assert_valid(parts, labels.size, 12)


def test_shards_too_many_shards_is_user_error():
  labels = _balanced(1)
  with pytest.raises(UserError, match="shards"):
    fp.partition("shards", labels,
                 fp.PartitionConfig(num_clients=6,
                                    params=fp.ShardsParams(2)))


def test_quantity_skew_sizes_unequal():
  labels, _ = _data(n=20000)
  config = fp.PartitionConfig(num_clients=100, min_examples_per_client=2,
                              seed=0, params=fp.QuantitySkewParams(1.5))
  parts = fp.partition("quantity_skew", labels, config)
  _assert_valid(parts, labels.size, 100)
  sizes = np.array([p.size for p in parts])
  assert sizes.min() >= 2
  assert sizes.max() / sizes.min() > 10
  # Labels stay IID: the big clients look like the global distribution.
  hist = fp.label_histogram(labels, parts, NUM_CLASSES)
  big = hist[sizes >= 500]
  assert big.size
  summary = fp.partition_summary(big)
  assert summary["label_skew"] < 0.1


def test_quantity_skew_exponent_controls_skew():
  labels, _ = _data(n=20000)

  def cv(exponent):
    sizes = [p.size for p in fp.partition(
        "quantity_skew", labels,
        fp.PartitionConfig(num_clients=100,
                           params=fp.QuantitySkewParams(exponent)))]
    return np.std(sizes) / np.mean(sizes)

  assert cv(1.0) > cv(10.0)


def test_quantity_skew_dirichlet_sizes():
  """--client_sizes=dirichlet: NIID-Bench's quantity skew. Sizes follow
  Dir(alpha) proportions on top of the minimum; smaller alpha, more skew."""
  labels, _ = _data(n=20000)

  def sizes(alpha, seed=0):
    config = fp.PartitionConfig(
        num_clients=10, min_examples_per_client=10, seed=seed,
        params=fp.QuantitySkewParams(client_sizes="dirichlet",
                                     size_dirichlet_alpha=alpha))
    parts = fp.partition("quantity_skew", labels, config)
    _assert_valid(parts, labels.size, 10)
    return np.array([p.size for p in parts])

  s = sizes(0.5)
  assert s.min() >= 10 and s.sum() == labels.size
  cv = lambda alpha: np.mean([np.std(sizes(alpha, k)) / np.mean(
      sizes(alpha, k)) for k in range(5)])
  assert cv(0.1) > cv(0.5) > cv(100.0)
  assert cv(100.0) < 0.15
  # Labels stay IID within a client.
  config = fp.PartitionConfig(
      num_clients=10, seed=0,
      params=fp.QuantitySkewParams(client_sizes="dirichlet"))
  parts = fp.partition("quantity_skew", labels, config)
  hist = fp.label_histogram(labels, [p for p in parts if p.size >= 1000],
                            NUM_CLASSES)
  assert fp.partition_summary(hist)["label_skew"] < 0.1


def test_quantity_skew_dirichlet_smallest_alpha_gives_one_big_client():
  labels, _ = _data(n=2000)
  config = fp.PartitionConfig(
      num_clients=8, min_examples_per_client=5, seed=3,
      params=fp.QuantitySkewParams(
          client_sizes="dirichlet",
          size_dirichlet_alpha=fp.MIN_DIRICHLET_ALPHA))
  parts = fp.partition("quantity_skew", labels, config)
  _assert_valid(parts, labels.size, 8)
  sizes = sorted(p.size for p in parts)
  assert sizes[:7] == [5] * 7 and sizes[7] == 2000 - 35


@pytest.mark.parametrize("params,field", [
    (fp.DirichletParams(dirichlet_alpha=1e-9), "dirichlet_alpha"),
    (fp.QuantitySkewParams(client_sizes="dirichlet",
                           size_dirichlet_alpha=1e-300),
     "size_dirichlet_alpha")])
def test_concentration_below_floor_is_refused_not_hung(params, field):
  """numpy's Dirichlet draw never returns at alpha 1e-9; the floor turns
  that hang into a one-line error."""
  with pytest.raises(UserError, match=f"{field} must be >= 1e-06"):
    params.validate()


def test_natural_one_writer_per_client():
  labels, writers = _data()
  parts = fp.partition("natural", labels,
                       fp.PartitionConfig(num_clients=NUM_WRITERS),
                       client_ids=writers)
  client_writers = [np.unique(writers[p]) for p in parts]
  assert all(w.size == 1 for w in client_writers)
  assert len({int(w[0]) for w in client_writers}) == NUM_WRITERS


def test_natural_merges_writers_without_splitting():
  labels, writers = _data()
  parts = fp.partition("natural", labels, fp.PartitionConfig(num_clients=7),
                       client_ids=writers)
  _assert_valid(parts, labels.size, 7)
  owner = {}
  for i, p in enumerate(parts):
    for w in np.unique(writers[p]):
      assert owner.setdefault(int(w), i) == i  # A writer is never split.
  counts = np.bincount(list(owner.values()), minlength=7)
  assert counts.min() >= NUM_WRITERS // 7
  assert counts.max() <= -(-NUM_WRITERS // 7)


def test_natural_string_ids():
  labels = _balanced(3)
  writers = np.array([f"w{i % 4}" for i in range(labels.size)])
  parts = fp.partition("natural", labels, fp.PartitionConfig(num_clients=2),
                       client_ids=writers)
  _assert_valid(parts, labels.size, 2)


def test_natural_errors():
  labels, writers = _data()
  with pytest.raises(UserError, match="natural clients"):
    fp.partition("natural", labels, fp.PartitionConfig(num_clients=5))
  with pytest.raises(UserError, match="writers"):
    fp.partition("natural", labels,
                 fp.PartitionConfig(num_clients=NUM_WRITERS + 1),
                 client_ids=writers)


@pytest.mark.parametrize("name,kwargs,match", [
    ("iid", dict(num_clients=0), "num_clients"),
    ("iid", dict(num_clients=11),
     "cannot split 10 examples across 11 clients"),
    ("dirichlet", dict(num_clients=2, params=fp.DirichletParams(0.0)),
     "dirichlet_alpha"),
    ("dirichlet",
     dict(num_clients=2, params=fp.DirichletParams(float("nan"))),
     "dirichlet_alpha"),
    ("shards", dict(num_clients=2, params=fp.ShardsParams(0)),
     "shards_per_client"),
    ("quantity_skew", dict(num_clients=2, params=fp.QuantitySkewParams(-1.0)),
     "power_law_exponent"),
    ("quantity_skew", dict(num_clients=2, params=fp.QuantitySkewParams(
        client_sizes="dirichlet", size_dirichlet_alpha=0.0)),
     "size_dirichlet_alpha"),
    ("quantity_skew", dict(num_clients=2, params=fp.QuantitySkewParams(
        client_sizes="zipf")), "client_sizes"),
    ("iid", dict(num_clients=2, params=fp.ShardsParams()), "takes NoParams"),
    ("iid", dict(num_clients=2, min_examples_per_client=0), "min_examples"),
    ("iid", dict(num_clients=3, min_examples_per_client=4), "at least 4"),
])
def test_validation_errors_are_user_errors(name, kwargs, match):
  labels = np.arange(10) % 3
  with pytest.raises(UserError, match=match):
    fp.partition(name, labels, fp.PartitionConfig(**kwargs))


@pytest.mark.parametrize("labels", [
    np.zeros((0,), np.int64),
    np.zeros((4, 2), np.int64),
    np.array([0.5, 1.0, 2.0]),
    np.array([-1, 0, 1]),
])
def test_bad_labels_are_user_errors(labels):
  with pytest.raises(UserError):
    fp.partition("iid", labels, fp.PartitionConfig(num_clients=1))


def test_client_ids_length_mismatch():
  with pytest.raises(UserError, match="client_ids"):
    fp.partition("natural", np.zeros(10, np.int64),
                 fp.PartitionConfig(num_clients=2), client_ids=np.zeros(9))


def test_unknown_partitioner_lists_names():
  with pytest.raises(UnknownNameError, match="dirichlet"):
    fp.partition("nope", np.zeros(10, np.int64),
                 fp.PartitionConfig(num_clients=2))


def test_integral_float_labels_accepted():
  parts = fp.partition("iid", np.array([0.0, 1.0, 2.0, 1.0]),
                       fp.PartitionConfig(num_clients=2))
  _assert_valid(parts, 4, 2)


def test_broken_plugin_is_caught(monkeypatch):
  def broken(labels, config, rng, client_ids):
    del config, rng, client_ids
    return [np.arange(labels.size), np.arange(1)]

  monkeypatch.setitem(PARTITIONERS._entries, "broken_test", broken)  # pylint: disable=protected-access
  with pytest.raises(fp.PartitionInvariantError, match="exactly once"):
    fp.partition("broken_test", np.zeros(10, np.int64),
                 fp.PartitionConfig(num_clients=2))


def test_label_histogram_sums_equal_sizes():
  labels, _ = _data()
  parts = fp.partition("dirichlet", labels, fp.PartitionConfig(num_clients=8))
  hist = fp.label_histogram(labels, parts, NUM_CLASSES)
  assert hist.shape == (8, NUM_CLASSES)
  assert hist.dtype == np.int64
  np.testing.assert_array_equal(hist.sum(axis=1), [p.size for p in parts])
  np.testing.assert_array_equal(hist.sum(axis=0),
                                np.bincount(labels, minlength=NUM_CLASSES))
  with pytest.raises(UserError):
    fp.label_histogram(labels, parts, NUM_CLASSES - 1)


def test_partition_summary():
  hist = np.array([[5, 0], [0, 5], [3, 2]])
  s = fp.partition_summary(hist)
  json.dumps(s)
  assert s["num_clients"] == 3
  assert s["min_size"] == 5 and s["max_size"] == 5
  assert s["mean_size"] == 5.0
  assert s["mean_classes_per_client"] == pytest.approx(4 / 3)
  # Global dist is (8/15, 7/15); TVs are 7/15, 8/15, 1/15.
  assert s["label_skew"] == pytest.approx(16 / 45)
  iid = fp.partition_summary(np.full((4, 3), 7))
  assert iid["label_skew"] == 0.0


def test_format_histogram():
  hist = np.arange(30 * 3).reshape(30, 3)
  text = fp.format_histogram(hist, max_rows=5)
  lines = text.splitlines()
  assert lines[0].split() == ["client", "size", "0", "1", "2"]
  assert lines[1].split() == ["0", "3", "0", "1", "2"]
  assert len(lines) == 1 + 5 + 1
  assert lines[-1].startswith("...") and "25 more" in lines[-1]
  full = fp.format_histogram(hist[:4])
  assert len(full.splitlines()) == 5 and "..." not in full


def test_plot_histogram_writes_png(tmp_path):
  labels, _ = _data()
  parts = fp.partition("shards", labels, fp.PartitionConfig(num_clients=12))
  hist = fp.label_histogram(labels, parts, NUM_CLASSES)
  path = tmp_path / "sub" / "hist.png"
  fp.plot_histogram(hist, str(path), title="shards")
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  assert len(data) > 1000


@pytest.mark.parametrize("k", [1, 2, 3])
def test_labels_per_client_gives_k_labels(k):
  labels = np.repeat(np.arange(10), 60)
  parts = fp.partition("labels_per_client", labels,
                       fp.PartitionConfig(
                           num_clients=10, seed=0,
                           params=fp.LabelsPerClientParams(k)))
  _assert_valid(parts, labels.size, 10)
  for part in parts:
    assert len(np.unique(labels[part])) == k


def test_labels_per_client_more_than_classes_is_user_error():
  with pytest.raises(UserError, match="exceeds"):
    fp.partition("labels_per_client", np.repeat(np.arange(3), 5),
                 fp.PartitionConfig(num_clients=3,
                                    params=fp.LabelsPerClientParams(4)))
