"""Labels on a share of each client's examples (--label_fraction): the
choice, and a federated run plus its centralized comparison on it."""

import dataclasses
import json

import numpy as np
import pytest

from fedclf.errors import UserError
from fedclf.federated import run_federated
from fedclf.federated.client_labels import labelled_clients
from tests.federated.simulation_test import tiny_config


def test_each_client_keeps_its_share_at_least_one_sorted():
  clients = [np.arange(0, 100), np.arange(100, 103), np.array([], np.int64),
             np.arange(200, 240)[::-1]]
  kept = labelled_clients(clients, 0.1, seed=0)
  assert [len(k) for k in kept] == [10, 1, 0, 4]
  for part, whole in zip(kept, clients):
    assert set(part) <= set(whole)
    assert np.all(np.diff(part) > 0)
  assert [list(k) for k in labelled_clients(clients, 1.0, seed=0)] == [
      sorted(c) for c in clients]


def test_the_choice_is_seeded_per_client():
  clients = [np.arange(0, 50), np.arange(50, 100)]
  a = labelled_clients(clients, 0.2, seed=1)
  np.testing.assert_array_equal(a[1],
                                labelled_clients(clients, 0.2, seed=1)[1])
  # A client's labelled examples do not depend on the others' sizes.
  grown = [np.arange(0, 80), np.arange(50, 100)]
  np.testing.assert_array_equal(a[1], labelled_clients(grown, 0.2, 1)[1])
  assert not np.array_equal(a[1], labelled_clients(clients, 0.2, 2)[1])
  with pytest.raises(UserError, match="label_fraction"):
    labelled_clients(clients, 0.0, seed=1)


def test_federated_and_centralized_train_on_the_same_labelled_examples(
    tmp_path):
  config = dataclasses.replace(tiny_config(rounds=1), label_fraction=0.25,
                               centralized_epochs=1)
  summary = run_federated(config, str(tmp_path), {})
  sizes = json.loads((tmp_path / "partition.json").read_text())[
      "client_sizes"]
  # 400 digits over 8 clients, a quarter of each labelled.
  assert sum(sizes) == summary["train_examples"]
  assert 90 <= summary["train_examples"] <= 110
  assert summary["label_fraction"] == 0.25
  central = json.loads((tmp_path / "centralized" / "summary.json")
                       .read_text())
  assert central["train_examples"] == summary["train_examples"]
  assert 0.0 < summary["centralized_test_accuracy"] <= 1.0


def test_label_fraction_is_refused_out_of_range_and_for_ssl():
  with pytest.raises(UserError, match="label_fraction"):
    dataclasses.replace(tiny_config(), label_fraction=1.5).validate()
  with pytest.raises(UserError, match="reads no labels"):
    dataclasses.replace(tiny_config(), label_fraction=0.1,
                        objective="simclr").validate()
