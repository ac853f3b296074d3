"""Property-based tests (hypothesis) of every registered partitioner:
whatever the labels, client ids, client count and seed, a request either
yields a valid split (every example exactly once, no empty client, the same
split for the same seed) or is refused with a one-line UserError."""

import math

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

# Registers `per_domain`, so every partitioner fedclf ships is covered
# whatever else this test process imported.
import fedclf.adapt.labelled_domain_clients  # noqa: F401  pylint: disable=unused-import
from fedclf import partition as fp
from fedclf.errors import UserError
from fedclf.registry import PARTITIONERS

# Modest budgets (the file runs in seconds on a loaded 2-core machine);
# derandomized, so CI sees the same examples on every run, and no example
# database is written into the checkout.
FAST = settings(max_examples=60, deadline=None, derandomize=True,
                database=None)


@st.composite
def datasets(draw):
  """(labels, natural client ids) of a small dataset."""
  n = draw(st.integers(1, 120))
  num_classes = draw(st.integers(1, 10))
  labels = np.asarray(draw(st.lists(st.integers(0, num_classes - 1),
                                    min_size=n, max_size=n)))
  num_groups = draw(st.integers(1, n))
  groups = np.asarray(draw(st.lists(st.integers(0, num_groups - 1),
                                    min_size=n, max_size=n)))
  return labels, groups


# Each partitioner's own hyper-parameters (the others have none).
PARAMS = {
    "dirichlet": st.builds(fp.DirichletParams,
                           dirichlet_alpha=st.floats(1e-3, 1e3)),
    "shards": st.builds(fp.ShardsParams, shards_per_client=st.integers(1, 4)),
    "quantity_skew": st.builds(fp.QuantitySkewParams,
                               power_law_exponent=st.floats(0.2, 5.0),
                               client_sizes=st.sampled_from(
                                   ["power_law", "dirichlet"]),
                               size_dirichlet_alpha=st.floats(1e-3, 1e3)),
    "labels_per_client": st.builds(fp.LabelsPerClientParams,
                                   labels_per_client=st.integers(1, 4)),
}


def configs(name, max_clients):
  return st.builds(
      fp.PartitionConfig,
      num_clients=st.integers(1, max_clients),
      seed=st.integers(0, 2**32),
      min_examples_per_client=st.integers(1, 3),
      params=PARAMS.get(name, st.none()))


def assert_one_line(error):
  message = str(error)
  assert message and "\n" not in message, message


@FAST
@given(st.sampled_from(sorted(PARTITIONERS.names())), datasets(),
       st.data())
def test_valid_split_or_one_line_user_error(name, dataset, data):
  labels, groups = dataset
  config = data.draw(configs(name, max_clients=len(labels)))
  try:
    parts = fp.partition(name, labels, config, client_ids=groups)
  except UserError as e:  # infeasible for this partitioner (e.g. shards)
    assert_one_line(e)
    return
  assert len(parts) == config.num_clients
  assert all(p.size >= 1 and p.dtype == np.int64 for p in parts)
  assert all(np.all(np.diff(p) > 0) for p in parts)
  np.testing.assert_array_equal(np.sort(np.concatenate(parts)),
                                np.arange(len(labels)))
  # The size floor holds for the partitioners that promise it.
  if name in ("dirichlet", "quantity_skew"):
    assert min(p.size for p in parts) >= config.min_examples_per_client
  # Seeded: the same request gives the same split.
  again = fp.partition(name, labels.copy(), config, client_ids=groups.copy())
  for a, b in zip(parts, again):
    np.testing.assert_array_equal(a, b)


@FAST
@given(st.sampled_from(sorted(PARTITIONERS.names())), datasets(),
       st.integers(1, 50))
def test_more_clients_than_examples_is_refused(name, dataset, extra):
  labels, groups = dataset
  config = fp.PartitionConfig(num_clients=len(labels) + extra)
  with pytest.raises(UserError, match="cannot split") as e:
    fp.partition(name, labels, config, client_ids=groups)
  assert_one_line(e.value)


@FAST
@given(datasets(), st.integers(1, 10), st.integers(1, 20))
def test_impossible_size_floor_is_refused(dataset, num_clients, floor):
  labels, _ = dataset
  config = fp.PartitionConfig(num_clients=num_clients,
                              min_examples_per_client=floor)
  if num_clients * floor <= len(labels):
    assert len(fp.partition("dirichlet", labels, config)) == num_clients
  else:
    with pytest.raises(UserError) as e:
      fp.partition("dirichlet", labels, config)
    assert_one_line(e.value)


_BAD_FIELDS = st.one_of(
    st.tuples(st.just("num_clients"),
              st.one_of(st.integers(max_value=0), st.just(True),
                        st.floats(allow_nan=True))),
    st.tuples(st.just("seed"), st.one_of(st.floats(), st.text(max_size=3))),
    st.tuples(st.just("min_examples_per_client"),
              st.one_of(st.integers(max_value=0), st.floats())))

# (partitioner, params class, field) -> values it must refuse.
_BAD_PARAMS = st.one_of(
    st.tuples(st.just(("dirichlet", fp.DirichletParams, "dirichlet_alpha")),
              st.one_of(st.floats(max_value=0.0), st.just(math.nan),
                        st.just(math.inf), st.just(False))),
    st.tuples(st.just(("shards", fp.ShardsParams, "shards_per_client")),
              st.integers(max_value=0)),
    st.tuples(st.just(("quantity_skew", fp.QuantitySkewParams,
                       "power_law_exponent")),
              st.one_of(st.floats(max_value=0.0), st.just(math.nan),
                        st.just(-math.inf))),
    st.tuples(st.just(("labels_per_client", fp.LabelsPerClientParams,
                       "labels_per_client")), st.integers(max_value=0)))


@FAST
@given(st.sampled_from(sorted(PARTITIONERS.names())), _BAD_FIELDS)
def test_bad_config_values_are_one_line_user_errors(name, bad):
  field, value = bad
  config = fp.PartitionConfig(**{"num_clients": 2, field: value})
  with pytest.raises(UserError, match=field) as e:
    fp.partition(name, np.arange(20) % 3, config,
                 client_ids=np.arange(20) % 4)
  assert_one_line(e.value)


@FAST
@given(_BAD_PARAMS)
def test_bad_params_are_one_line_user_errors(bad):
  (name, params_class, field), value = bad
  config = fp.PartitionConfig(num_clients=2,
                              params=params_class(**{field: value}))
  with pytest.raises(UserError, match=field) as e:
    fp.partition(name, np.arange(20) % 3, config)
  assert_one_line(e.value)


def test_params_of_another_partitioner_are_refused():
  config = fp.PartitionConfig(num_clients=2, params=fp.ShardsParams())
  with pytest.raises(UserError, match="dirichlet takes DirichletParams"):
    fp.partition("dirichlet", np.arange(20) % 3, config)
  with pytest.raises(UserError, match="iid takes NoParams"):
    fp.partition("iid", np.arange(20) % 3, config)


@FAST
@given(st.sampled_from(["iid", "dirichlet", "shards", "quantity_skew"]),
       st.integers(0, 2**16))
def test_a_different_seed_changes_the_split(name, seed):
  labels = np.arange(200) % 10
  a = fp.partition(name, labels, fp.PartitionConfig(num_clients=8, seed=seed))
  b = fp.partition(name, labels,
                   fp.PartitionConfig(num_clients=8, seed=seed + 1))
  assert any(not np.array_equal(x, y) for x, y in zip(a, b))
