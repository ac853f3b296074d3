"""fedclf.models.pretrained: an encoder read from a finished run folder of
each model-file kind, loaded into a new model, frozen, and every refusal
one UserError naming what is wrong."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.models import build_classifier
from fedclf.models import ModelConfig
from fedclf.models.pretrained import check_encoder_init
from fedclf.models.pretrained import check_source_fits
from fedclf.models.pretrained import encoder_feature_statistics
from fedclf.models.pretrained import EncoderInit
from fedclf.models.pretrained import FEATURE_STD_FLOOR
from fedclf.models.pretrained import load_source_encoder
from fedclf.models.pretrained import read_source_encoder
from fedclf.models.pretrained import RELATIVE_STD_FLOOR
from fedclf.models.pretrained import source_feature_statistics
from fedclf.models.pretrained import standardize_head_features

SHAPE = (8, 8, 1)
SMALL = ModelConfig(width_multiplier=0.125, seed=1)


def write_run(folder, model, kind, model_file, model_name="mlp",
              config=SMALL):
  """A finished run folder as `write_final_model` leaves it."""
  folder.mkdir(parents=True, exist_ok=True)
  model.save(str(folder / model_file))
  (folder / "summary.json").write_text(json.dumps({
      "kind": kind, "model_file": model_file,
      "input_normalization": {"mean": [0.3], "std": [0.2]}}))
  (folder / "config.json").write_text(json.dumps({
      "config": {"resolved": {"model_name": model_name,
                              "model": dataclasses.asdict(config)}},
      "git": {"commit": "abc123", "dirty": False}}))
  return str(folder)


def new_encoder(name="mlp", shape=SHAPE, config=ModelConfig(
    width_multiplier=0.125)):
  model = build_classifier(name, shape, 10, config)
  return model, model.get_layer("encoder")


@pytest.mark.parametrize("kind", ["ssl_pretrain", "centralized"])
def test_loads_the_source_encoder_and_records_the_source(tmp_path, kind):
  source_model = build_classifier("mlp", SHAPE, 10, SMALL)
  if kind == "ssl_pretrain":
    run = write_run(tmp_path / "run", source_model.get_layer("encoder"),
                    kind, "encoder.keras")
  else:
    run = write_run(tmp_path / "run", source_model, kind, "model.keras")
  source = read_source_encoder(EncoderInit(run))
  model, encoder = new_encoder()  # another seed: other initial weights
  assert not np.allclose(encoder.get_weights()[0],
                         source_model.get_layer("encoder").get_weights()[0])
  load_source_encoder(source, encoder, "mlp", ModelConfig(
      width_multiplier=0.125, norm="group"))  # an mlp has no norm layers
  for a, b in zip(encoder.get_weights(),
                  source_model.get_layer("encoder").get_weights()):
    np.testing.assert_array_equal(a, b)
  assert encoder.trainable  # not frozen unless asked
  record = source.record()
  assert record["kind"] == kind and record["git_commit"] == "abc123"
  assert record["input_normalization"] == {"mean": [0.3], "std": [0.2]}
  assert record["input_shape"] == [8, 8, 1] and not record["frozen"]
  assert len(model.trainable_variables) == 4 + 2  # encoder 2 Dense, head 1


def test_freeze_leaves_only_the_head_trainable(tmp_path):
  run = write_run(tmp_path / "run",
                  build_classifier("mlp", SHAPE, 10, SMALL), "centralized",
                  "model.keras")
  model, encoder = new_encoder()
  load_source_encoder(read_source_encoder(EncoderInit(run, freeze=True)),
                      encoder, "mlp", SMALL)
  before = encoder.get_weights()
  head = model.get_layer("head")
  assert [id(v) for v in model.trainable_variables] == [
      id(v) for v in head.trainable_variables]
  optimizer = tf.keras.optimizers.SGD(0.5)
  x = np.random.default_rng(0).random((4, *SHAPE)).astype(np.float32)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(tf.square(model(x, training=True)))
  optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                model.trainable_variables))
  for a, b in zip(before, encoder.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_refuses_missing_and_unfinished_runs(tmp_path):
  assert read_source_encoder(EncoderInit()) is None
  with pytest.raises(UserError, match="needs --init_encoder=RUN_DIR"):
    read_source_encoder(EncoderInit(freeze=True))
  with pytest.raises(UserError, match="does not exist"):
    read_source_encoder(EncoderInit(str(tmp_path / "nope")))
  unfinished = tmp_path / "unfinished"
  unfinished.mkdir()
  (unfinished / "config.json").write_text("{}")
  with pytest.raises(UserError, match="summary.json not found"):
    read_source_encoder(EncoderInit(str(unfinished)))
  (unfinished / "summary.json").write_text('{"diverged_at_round": 3}')
  with pytest.raises(UserError, match="diverged"):
    read_source_encoder(EncoderInit(str(unfinished)))
  (unfinished / "summary.json").write_text('{"test_accuracy": 0.5}')
  with pytest.raises(UserError, match="records no finished run kind"):
    read_source_encoder(EncoderInit(str(unfinished)))
  run = write_run(tmp_path / "run", build_classifier("mlp", SHAPE, 10, SMALL),
                  "centralized", "model.keras")
  (tmp_path / "run" / "model.keras").unlink()
  with pytest.raises(UserError, match="model.keras not found"):
    read_source_encoder(EncoderInit(run))


def test_refuses_another_architecture_naming_the_difference(tmp_path):
  run = write_run(tmp_path / "mlp", build_classifier("mlp", SHAPE, 10, SMALL),
                  "centralized", "model.keras")
  source = read_source_encoder(EncoderInit(run))
  cases = [
      (("cnn", SHAPE, SMALL), r"model mlp != cnn"),
      (("mlp", SHAPE, ModelConfig(width_multiplier=0.25)),
       r"width_multiplier 0.125 != 0.25"),
      (("mlp", (16, 16, 1), SMALL), r"input shape \(8, 8, 1\) != "
       r"\(16, 16, 1\)"),
  ]
  for (name, shape, config), message in cases:
    _, encoder = new_encoder(name, shape, config)
    with pytest.raises(UserError, match=message):
      load_source_encoder(source, encoder, name, config)
    # The same refusal before a trainer builds (or writes) anything.
    with pytest.raises(UserError, match=message):
      check_source_fits(source, name, config, shape, 10)
  check_source_fits(source, "mlp", SMALL, SHAPE, 10)  # fits: no error
  alexnet = ModelConfig(width_multiplier=0.125, norm="batch")
  run = write_run(tmp_path / "alexnet",
                  build_classifier("alexnet", (16, 16, 1), 10, alexnet),
                  "federated", "model.keras", "alexnet", alexnet)
  grouped = dataclasses.replace(alexnet, norm="group")
  _, encoder = new_encoder("alexnet", (16, 16, 1), grouped)
  with pytest.raises(UserError, match="normalization layers "
                     "BatchNormalization x5 != GroupNormalization x5"):
    load_source_encoder(read_source_encoder(EncoderInit(run)), encoder,
                        "alexnet", grouped)


def test_feature_statistics_from_per_set_sums_equal_the_pooled_ones():
  _, encoder = new_encoder()
  rng = np.random.default_rng(0)
  sets = [rng.random((n, *SHAPE)).astype(np.float32) for n in (3, 7, 0, 5)]
  normalization = Normalization((0.5,), (0.25,))
  stats = encoder_feature_statistics(encoder, sets, normalization)
  pooled = encoder(normalization.apply(np.concatenate(sets))).numpy()
  np.testing.assert_allclose(stats.mean, pooled.mean(axis=0), atol=1e-5)
  std = pooled.std(axis=0)
  floor = max(RELATIVE_STD_FLOOR * np.median(std), FEATURE_STD_FLOOR)
  np.testing.assert_allclose(stats.std, np.maximum(std, floor), atol=1e-5)
  assert stats.examples == 15 and stats.image_sets == 4
  assert stats.record()["examples"] == 15


def features_std(model, x):
  return model.get_layer("encoder")(x).numpy().std(axis=0)


def test_a_nearly_dead_feature_is_not_amplified_past_the_floor():
  inputs = tf.keras.Input((2,))
  encoder = tf.keras.Model(inputs, inputs)  # the "features" are the inputs
  x = np.stack([np.linspace(-1.0, 1.0, 101),
                1e-4 * np.linspace(-1.0, 1.0, 101)], axis=1)
  stats = encoder_feature_statistics(encoder, [x.astype(np.float32)],
                                     Normalization((0.0,), (1.0,)))
  spread = x[:, 0].std()
  # Median of the two stds ~ spread / 2: the floor is a quarter of it.
  np.testing.assert_allclose(stats.std, [spread, RELATIVE_STD_FLOOR *
                                         (spread + 1e-4 * spread) / 2],
                             rtol=1e-4)


def test_standardized_head_sees_zero_mean_unit_std_features(tmp_path):
  config = dataclasses.replace(SMALL, standardize_features=True)
  run = write_run(tmp_path / "run", build_classifier("mlp", SHAPE, 10, SMALL),
                  "centralized", "model.keras")
  source = read_source_encoder(EncoderInit(run))
  model = build_classifier("mlp", SHAPE, 10, config)
  load_source_encoder(source, model.get_layer("encoder"), "mlp", config)
  x = np.random.default_rng(1).random((64, *SHAPE)).astype(np.float32)
  identity = Normalization((0.0,), (1.0,))
  stats = source_feature_statistics(source, "mlp", config, SHAPE, 10, [x],
                                    identity)
  standardize_head_features(model, stats)
  head = model.get_layer("head")
  standardized = head.get_layer("feature_standardization")(
      model.get_layer("encoder")(x)).numpy()
  # Dead ReLU units stay at zero; nearly dead ones, floored, below 1.
  live = features_std(model, x) >= stats.std - 1e-6
  np.testing.assert_allclose(standardized.mean(axis=0), 0.0, atol=1e-4)
  np.testing.assert_allclose(standardized.std(axis=0)[live], 1.0, atol=1e-3)
  # Fixed: not a trainable variable (never trained nor averaged as one).
  assert len(head.trainable_variables) == 2
  # The statistics travel with the saved model.
  model.save(str(tmp_path / "m.keras"))
  loaded = tf.keras.models.load_model(str(tmp_path / "m.keras"),
                                      compile=False)
  np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-5)
  # Without the option there is nothing to set, and no source to take the
  # statistics from is refused.
  assert source_feature_statistics(source, "mlp", SMALL, SHAPE, 10, [x],
                                   identity) is None
  with pytest.raises(ValueError, match="no head feature standardization"):
    standardize_head_features(build_classifier("mlp", SHAPE, 10, SMALL),
                              stats)
  with pytest.raises(UserError, match="needs --init_encoder"):
    check_encoder_init(EncoderInit(), config)
  check_encoder_init(EncoderInit(run), config)
