"""Export paths on tiny trained runs: SavedModel (TF Serving layout,
versions, uint8 signature, saved_model_cli), TFLite float and int8, TF.js
in Node, the model card, and exporting a federated run's saved model."""

import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.export import card as card_lib
from fedclf.export import ExportConfig
from fedclf.export import run_export
from fedclf.export import serving
from fedclf.export import tflite
from fedclf.results.trained_run import CLASSIFIER_KINDS
from fedclf.run_reader import load_classifier_run
from fedclf.train.loop import predict_logits
from tests.export.tiny_runs import centralized_run
from tests.export.tiny_runs import federated_run
from tests.export.tiny_runs import session_dir
from tests.export.tiny_runs import tiny_run


@pytest.fixture(scope="module")
def centralized_dir(tmp_path_factory):
  return centralized_run(tmp_path_factory)


@pytest.fixture(scope="module")
def federated_dir(tmp_path_factory):
  return federated_run(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(centralized_dir, tmp_path_factory):
  """Every format of the centralized run, exported and measured once."""

  def export(folder):
    config = ExportConfig(run_dir=centralized_dir, model_name="digits_cnn",
                          export_dir=os.path.join(folder, "exports"),
                          representative_examples=100, tfjs_examples=32)
    run_export(config, os.path.join(folder, "results"), {"test": True})

  base = pathlib.Path(session_dir(tmp_path_factory, "tiny_export", export))
  summary = json.loads((base / "results" / "digits_cnn" /
                        "summary.json").read_text())
  return base, summary


def test_saved_model_answers_like_keras(exported):
  _, summary = exported
  saved = summary["saved_model"]
  assert saved["top1_agreement_with_keras"] == 1.0
  assert saved["max_abs_logit_difference"] < 1e-4
  assert saved["test_accuracy"] == summary["keras_test_accuracy"]
  # The test set is the run's own: Keras on the float images reproduces
  # the reported accuracy (8x8 digits are not exact in 8 bits, so the
  # formats are all compared on the rounded images).
  assert not summary["uint8_inputs_exact"]
  assert summary["keras_test_accuracy_float_inputs"] == pytest.approx(
      summary["reported_test_accuracy"])
  assert summary["test_examples"] == 200


def test_serving_signature_takes_raw_uint8_images(exported, centralized_dir):
  _, summary = exported
  path = summary["export_path"]
  loaded = tf.saved_model.load(path)
  serve = loaded.signatures["serving_default"]
  spec = serve.structured_input_signature[1]["images"]
  assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 8, 8, 1]
  run = load_classifier_run(centralized_dir)
  ds = run.data()
  images = serving.to_uint8(ds.x_test[:20])
  out = serve(images=tf.constant(images))
  keras = predict_logits(run.model, images / 255.0, run.normalization)
  np.testing.assert_allclose(out["logits"].numpy(), keras, atol=1e-4)
  np.testing.assert_array_equal(out["classes"].numpy(), keras.argmax(-1))
  np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0,
                             rtol=1e-5)


def test_saved_model_cli_lists_the_signature(exported):
  base, summary = exported
  text = (base / "results" / "digits_cnn" / "saved_model_cli.txt").read_text()
  assert "signature_def['serving_default']" in text
  assert "DT_UINT8" in text and "(-1, 8, 8, 1)" in text
  serving.check_signature_listed(text, (8, 8, 1))
  with pytest.raises(RuntimeError, match="does not take uint8 images"):
    serving.check_signature_listed(text, (28, 28, 1))


def test_tflite_float_and_int8_accuracy_and_size(exported):
  _, summary = exported
  float_, int8 = summary["tflite_float"], summary["tflite_int8"]
  assert float_["top1_agreement_with_keras"] == 1.0
  assert float_["within_0.1_point"]
  # 200 test images: one image is half a point; int8 may flip a couple.
  assert int8["top1_agreement_with_keras"] >= 0.97
  assert abs(int8["accuracy_drop_points"]) <= 2.0
  # A 140k-parameter model: the int8 file is ~3.5x smaller (flatbuffer
  # overhead weighs more than on the 1.7M-parameter MNIST CNN's 4x).
  assert int8["size_ratio_float_over_int8"] > 3.0
  assert int8["bytes"] < float_["bytes"]


def test_int8_model_takes_raw_uint8_pixels(exported):
  _, summary = exported
  path = os.path.join(summary["export_path"], "tflite", "model_int8.tflite")
  interpreter = tf.lite.Interpreter(model_path=path)
  detail = interpreter.get_input_details()[0]
  assert detail["dtype"] == np.uint8
  assert detail["quantization"] == (1.0, 0)
  output = interpreter.get_output_details()[0]
  assert output["dtype"] == np.int8


def test_tfjs_in_node_matches_keras_top1(exported):
  _, summary = exported
  tfjs = summary["tfjs"]
  assert tfjs["node_examples"] == 32
  assert tfjs["top1_agreement_with_keras"] == 1.0
  assert tfjs["max_abs_logit_difference"] < 1e-3
  assert os.path.exists(os.path.join(summary["export_path"], "tfjs",
                                     "model.json"))


def test_model_card_and_results_files(exported):
  base, summary = exported
  assert summary["failed_checks"] == []
  card = json.loads((base / "results" / "digits_cnn" /
                     "model_card.json").read_text())
  in_version = json.loads(open(os.path.join(summary["export_path"],
                                            "model_card.json")).read())
  assert card == in_version
  assert card["version"] == 1 and card["model_name"] == "digits_cnn"
  assert card["training"]["kind"] == "centralized"
  assert card["training_run"]["kind"] == "centralized"
  assert card["training_run"]["weights_from"].endswith("model.keras")
  assert card["data"]["name"] == "digits"
  assert card["preprocessing"]["recorded_by_training_run"]
  assert len(card["preprocessing"]["mean"]) == 1
  assert card["fedclf_version"]
  assert "commit" in card["export"]["git"]
  assert card["metrics"]["keras_test_accuracy"] == summary[
      "keras_test_accuracy"]
  assert "tflite/model_int8.tflite" in card["files"]
  table = (base / "results" / "table.md").read_text()
  assert "| digits_cnn | centralized | 1 |" in table and "all pass" in table
  config = json.loads((base / "results" / "digits_cnn" /
                       "config.json").read_text())
  assert config["config"]["resolved"]["model_name"] == "digits_cnn"


def test_versions_increase_and_partial_versions_stay_hidden(
    centralized_dir, tmp_path):
  run = load_classifier_run(centralized_dir)
  export_dir = str(tmp_path)
  for expected in (1, 2):
    path, version = serving.write_version(
        export_dir, "m", lambda folder: serving.save_serving_model(
            run.model, run.normalization, folder))
    assert version == expected and path.endswith(os.path.join("m",
                                                              str(expected)))

  def fail(folder):
    open(os.path.join(folder, "half-written"), "w").close()
    raise OSError("disk full")

  with pytest.raises(OSError):
    serving.write_version(export_dir, "m", fail)
  assert sorted(os.listdir(tmp_path / "m")) == ["1", "2"]
  assert serving.next_version(str(tmp_path / "m")) == 3


def test_tflite_float_logits_match_keras(centralized_dir, tmp_path):
  run = load_classifier_run(centralized_dir)
  serving.save_serving_model(run.model, run.normalization, str(tmp_path))
  images = serving.to_uint8(run.data().x_test[:16])
  content = tflite.convert(str(tmp_path), "float",
                           tflite.representative_pixels(images / 255.0, 8, 0))
  path = str(tmp_path / "float.tflite")
  tflite.write_tflite(content, path)
  logits = tflite.tflite_logits(path, images.astype(np.float32),
                                batch_size=5)
  keras = predict_logits(run.model, images / 255.0, run.normalization)
  np.testing.assert_allclose(logits, keras, atol=1e-4)


def test_federated_run_loads_its_saved_global_model(federated_dir):
  run = load_classifier_run(federated_dir)
  assert run.kind == "federated"
  assert run.model_path == os.path.join(federated_dir, "model.keras")
  ds = run.data()
  logits = predict_logits(run.model, ds.x_test, run.normalization)
  # Same weights and normalization as the simulation's final evaluation.
  assert np.mean(logits.argmax(-1) == ds.y_test) == pytest.approx(
      run.summary["final_test_accuracy"])


@pytest.mark.parametrize("kind", CLASSIFIER_KINDS)
def test_model_card_of_every_classifier_kind(kind, tmp_path_factory):
  run = load_classifier_run(tiny_run(tmp_path_factory, kind))
  card = card_lib.model_card(run, "m", 1, {}, {})
  assert card["training"]["kind"] == card["training_run"]["kind"] == kind
  assert card["class_names"] == run.data().class_names
  assert len(card["preprocessing"]["mean"]) == run.input_shape[-1]
  assert card["model"]["name"] == "mlp" or kind in ("centralized",
                                                    "federated")


def test_bad_run_directories(tmp_path, centralized_dir):
  with pytest.raises(UserError, match="does not exist"):
    load_classifier_run(str(tmp_path / "missing"))
  with pytest.raises(UserError, match="not a finished fedclf run"):
    load_classifier_run(str(tmp_path))
  with pytest.raises(UserError, match="model name"):
    ExportConfig(run_dir=centralized_dir, model_name="a/b").validate()
  with pytest.raises(UserError, match="saved_model format is required"):
    ExportConfig(run_dir=centralized_dir, model_name="m",
                 formats=("tflite",)).validate()
