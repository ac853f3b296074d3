"""Federated adaptation with unlabelled target clients: client split, one
tiny run per method, target labels never read, exact resume."""

import dataclasses
import json
import os

import numpy as np
import pytest

from fedclf.adapt import AdaptConfig
from fedclf.adapt import AdaptRunConfig
from fedclf.adapt import AdaptationTask
from fedclf.adapt import DannParams
from fedclf.adapt import DomainLimits
from fedclf.adapt import FederatedAdaptConfig
from fedclf.adapt import run_federated_uda
from fedclf.adapt.unlabelled_target_clients import SOURCE
from fedclf.adapt.unlabelled_target_clients import split_clients
from fedclf.adapt.unlabelled_target_clients import TARGET
from fedclf.adapt.unlabelled_target_clients import federated_uda_loop
from fedclf.errors import UserError
from fedclf.results import RunRecorder
from fedclf.models import ModelConfig

REAL_DATA = os.environ.get("FEDCLF_DATA_DIR", "")
needs_real_data = pytest.mark.skipif(
    not all(os.path.isdir(os.path.join(REAL_DATA, d))
            for d in ("mnist", "usps", "cifar10")),
    reason="FEDCLF_DATA_DIR with the real files is not set")

FEDERATION = FederatedAdaptConfig(source_clients=2, target_clients=2,
                                  clients_per_round=3, rounds=2,
                                  local_batch_size=32, client_lr=0.05,
                                  eval_every=1, checkpoint_every=1,
                                  warmup_rounds=1, pseudo_label_threshold=0.0)


def tiny(method):
  return AdaptRunConfig(
      source="mnist", target="usps", method=method, model_name="mlp",
      model=ModelConfig(width_multiplier=0.25),
      limits=DomainLimits(train=160, test=100),
      # DANN's params whatever the method: every method trains its model.
      adapt=AdaptConfig(params=DannParams(dann_hidden=(16,))))


def test_split_clients_covers_each_domain_once():
  clients = split_clients(10, 7, dataclasses.replace(
      FEDERATION, source_clients=3, target_clients=2))
  assert [c.domain for c in clients] == [SOURCE] * 3 + [TARGET] * 2
  source = np.concatenate([c.indices for c in clients[:3]])
  target = np.concatenate([c.indices for c in clients[3:]])
  assert sorted(source) == list(range(10))
  assert sorted(target) == list(range(7))
  assert sorted(len(c.indices) for c in clients[:3]) == [3, 3, 4]
  with pytest.raises(UserError, match="cannot share"):
    split_clients(1, 7, FEDERATION)


def test_label_skewed_split_covers_each_domain_once():
  labels_s = np.repeat(np.arange(10), 20)
  labels_t = np.repeat(np.arange(10), 12)
  config = dataclasses.replace(FEDERATION, source_clients=4, target_clients=3,
                               within_domain_alpha=0.1)
  clients = split_clients(200, 120, config, (labels_s, labels_t))
  assert [c.domain for c in clients] == [SOURCE] * 4 + [TARGET] * 3
  for labels, members in ((labels_s, clients[:4]), (labels_t, clients[4:])):
    assert sorted(np.concatenate([c.indices for c in members])) == list(
        range(len(labels)))
  # alpha 0.1: most clients hold few classes (IID shares hold all ten).
  classes = [len(np.unique(labels_s[c.indices])) for c in clients[:4]]
  assert np.mean(classes) < 8
  assert split_clients(200, 120, config, (labels_s, labels_t))[5].indices \
      .tolist() == clients[5].indices.tolist()
  with pytest.raises(UserError, match="within_domain_alpha"):
    dataclasses.replace(FEDERATION, within_domain_alpha=-1.0).validate()


def test_config_errors():
  with pytest.raises(UserError, match="one source and one target client"):
    dataclasses.replace(FEDERATION, target_clients=0).validate()
  with pytest.raises(UserError, match="clients_per_round"):
    dataclasses.replace(FEDERATION, clients_per_round=5).validate()
  with pytest.raises(UserError, match="federated adaptation runs"):
    run_federated_uda(tiny("finetune"), FEDERATION, "/nonexistent", {})


@needs_real_data
@pytest.mark.parametrize("method", ["source_only", "dann", "self_training",
                                    "fixmatch", "target_oracle"])
def test_tiny_run_per_method(method, tmp_path):
  summary = run_federated_uda(tiny(method), FEDERATION, str(tmp_path),
                               {"method": method})
  assert summary["rounds_run"] == 2 and summary["method"] == method
  assert summary["domain_accuracy"] == {
      "mnist": summary["source_accuracy"], "usps": summary["target_accuracy"]}
  assert summary["test_accuracy"] == summary["target_accuracy"]
  # Two rounds of a few SGD steps: clear of chance on the labelled source.
  assert summary["source_accuracy"] > 0.15
  assert ("final_domain_accuracy" in summary) == (method == "dann")
  rows = [json.loads(l) for l in
          (tmp_path / "metrics.jsonl").read_text().splitlines()]
  if method in ("self_training", "fixmatch"):
    # Round 1 is the warm-up; in round 2 the sampled target clients (3 of
    # 4 clients: at least one) label all their images (threshold 0; FixMatch
    # per batch, on the weak views).
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[0]["pseudo_labels"] == 0 and rows[1]["pseudo_labels"] >= 40
  # Ganin et al.'s annealing over the rounds (p = 0, then 1/2) for f-DANN,
  # on by default; the other methods keep --client_lr.
  lrs = [r["client_lr"] for r in rows]
  if method == "dann":
    np.testing.assert_allclose(lrs, [0.05, 0.05 / 6**0.75], rtol=1e-6)
  else:
    assert lrs == [0.05, 0.05]
  assert (tmp_path / "checkpoints").is_dir()


@needs_real_data
@pytest.mark.parametrize("method", ["dann", "self_training", "fixmatch"])
def test_adaptation_never_reads_target_labels(method, tmp_path):
  config = tiny(method)
  pair = config.load_pair()
  scrambled = config.load_pair()
  scrambled.target.y_train = np.random.default_rng(0).permutation(
      scrambled.target.y_train)

  def weights(p, out_dir):
    task = AdaptationTask(p, config.model_name, config.model, config.adapt)
    loop, evaluator = federated_uda_loop(p, task, method, FEDERATION,
                                         RunRecorder(str(out_dir), {}),
                                         str(out_dir))
    state = loop.run(resume=False, on_divergence=print).state
    return evaluator.load(state).get_weights()

  for a, b in zip(weights(pair, tmp_path / "a"),
                  weights(scrambled, tmp_path / "b")):
    np.testing.assert_array_equal(a, b)


@needs_real_data
def test_resume_replays_the_uninterrupted_run(tmp_path):
  config = tiny("dann")
  full = run_federated_uda(config, FEDERATION, str(tmp_path / "full"), {})
  cut = tmp_path / "cut"
  run_federated_uda(config, FEDERATION, str(cut), {})
  # Pretend the run was killed after round 1.
  os.remove(cut / "checkpoints" / "round_00002.npz")
  resumed = run_federated_uda(config, FEDERATION, str(cut), {}, resume=True)
  assert resumed["rounds_run"] == 2
  assert resumed["target_accuracy"] == pytest.approx(full["target_accuracy"])
  assert resumed["source_accuracy"] == pytest.approx(full["source_accuracy"])
