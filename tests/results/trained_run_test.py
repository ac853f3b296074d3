"""The run-folder contract: a tiny run of every kind writes its model and
its kind, and `load_trained_run` reloads the model and reproduces the
accuracy the run reported on the same data; old and odd folders are
one-line UserErrors."""

import json
import os
import shutil

import numpy as np
import pytest

from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.models import build_classifier
from fedclf.results import RunRecorder
from fedclf.run_reader import load_classifier_run
from fedclf.run_reader import load_trained_run
from fedclf.results.trained_run import RUN_KINDS
from fedclf.results.trained_run import write_final_model
from fedclf.ssl.evaluate import knn_accuracy
from fedclf.train.loop import predict_logits
from tests.export.tiny_runs import SMALL_MLP
from tests.export.tiny_runs import TINY_RUNS
from tests.export.tiny_runs import tiny_run


def reproduced_accuracy(kind: str, run) -> float:
  """The run's headline accuracy recomputed from the reloaded model the way
  its trainer computed it."""
  ds = run.data()
  test = (ds.x_test, ds.y_test)
  if kind == "ssl_pretrain":
    return knn_accuracy(run.model, (ds.x_train, ds.y_train), test,
                        run.normalization, run.resolved["knn_k"])
  if kind == "federated_ssl":
    # Every training image is a kNN reference (knn_train_examples > 300),
    # with knn_accuracy's default k, as the simulation evaluates.
    return knn_accuracy(run.model, (ds.x_train, ds.y_train), test,
                        run.normalization)
  logits = predict_logits(run.model, ds.x_test, run.normalization)
  return float(np.mean(logits.argmax(-1) == ds.y_test))


def test_every_kind_has_a_tiny_run():
  assert set(TINY_RUNS) == set(RUN_KINDS)


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_run_writes_its_model_and_kind_and_reloads(kind, tmp_path_factory):
  run_dir = tiny_run(tmp_path_factory, kind)
  with open(os.path.join(run_dir, "summary.json")) as f:
    summary = json.load(f)
  assert summary["kind"] == kind
  expected_file = ("encoder.keras" if kind in ("ssl_pretrain", "federated_ssl")
                   else "model.keras")
  assert summary["model_file"] == expected_file
  assert os.path.getsize(os.path.join(run_dir, expected_file)) > 0
  run = load_trained_run(run_dir)
  assert run.kind == kind and run.is_classifier == (
      expected_file == "model.keras")
  assert run.reported_accuracy() is not None
  assert reproduced_accuracy(kind, run) == pytest.approx(
      run.reported_accuracy(), abs=1e-9)
  if not run.is_classifier:
    with pytest.raises(UserError, match="saved an encoder") as error:
      load_classifier_run(run_dir)
    assert "\n" not in str(error.value)


def _copy_with_summary(run_dir: str, out: str, **changes) -> str:
  shutil.copytree(run_dir, out)
  path = os.path.join(out, "summary.json")
  with open(path) as f:
    summary = json.load(f)
  for key, value in changes.items():
    if value is None:
      summary.pop(key, None)
    else:
      summary[key] = value
  with open(path, "w") as f:
    json.dump(summary, f)
  return out


def test_runs_without_a_kind_ask_for_a_rerun(tmp_path, tmp_path_factory):
  legacy = _copy_with_summary(tiny_run(tmp_path_factory, "centralized"),
                              str(tmp_path / "legacy"), kind=None)
  with pytest.raises(UserError, match="records no run kind") as error:
    load_trained_run(legacy)
  assert "rerun it" in str(error.value) and "\n" not in str(error.value)


def test_odd_run_folders_are_user_errors(tmp_path, tmp_path_factory):
  source = tiny_run(tmp_path_factory, "centralized")
  unknown = _copy_with_summary(source, str(tmp_path / "unknown"),
                               kind="quantum")
  with pytest.raises(UserError, match="'quantum' run"):
    load_trained_run(unknown)
  diverged = _copy_with_summary(source, str(tmp_path / "diverged"),
                                diverged_at_round=3)
  with pytest.raises(UserError, match="diverged at round 3"):
    load_trained_run(diverged)
  missing = _copy_with_summary(source, str(tmp_path / "missing"))
  os.remove(os.path.join(missing, "model.keras"))
  with pytest.raises(UserError, match="model.keras not found"):
    load_trained_run(missing)
  with pytest.raises(UserError, match="does not exist"):
    load_trained_run(str(tmp_path / "nowhere"))


def test_write_final_model_saves_then_records(tmp_path):
  recorder = RunRecorder(str(tmp_path), {"resolved": {}})
  model = build_classifier("mlp", (8, 8, 1), 10, SMALL_MLP)
  summary = {"test_accuracy": 0.5}
  returned = write_final_model(recorder, model, "centralized", summary,
                               Normalization((0.25,), (2.0,)))
  assert returned is summary and summary["kind"] == "centralized"
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert on_disk["model_file"] == "model.keras"
  assert on_disk["input_normalization"] == {"mean": [0.25], "std": [2.0]}
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
  with pytest.raises(ValueError, match="unknown run kind"):
    write_final_model(recorder, model, "adapted", {}, Normalization((0.0,),
                                                                   (1.0,)))
