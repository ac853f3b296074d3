"""A federated run whose global model's encoder starts from a finished run
(local backend, in process): the initial global model carries the source
encoder, and a frozen encoder is neither trained nor aggregated."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from fedclf.data import DataConfig
from fedclf.errors import UserError
from fedclf.federated import Simulation
from fedclf.models import ModelConfig
from fedclf.models.pretrained import EncoderInit
from fedclf.train import OptimizerConfig
from fedclf.train import TrainConfig
from fedclf.train.centralized import CentralizedConfig
from fedclf.train.centralized import run_centralized
from tests.federated.simulation_test import tiny_config


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
  """A finished 1-epoch centralized mlp run on digits."""
  out = str(tmp_path_factory.mktemp("source"))
  run_centralized(CentralizedConfig(
      data=DataConfig(name="digits", train_limit=400, test_limit=100),
      model_name="mlp", model=ModelConfig(seed=7),
      train=TrainConfig(epochs=1, batch_size=32,
                        optimizer=OptimizerConfig("adam", 1e-2)),
      val_fraction=0.0), out, {"test": True})
  model = tf.keras.models.load_model(f"{out}/model.keras", compile=False)
  return out, model.get_layer("encoder").get_weights()


def simulation(tmp_path, source, freeze):
  config = dataclasses.replace(tiny_config(rounds=2),
                               encoder_init=EncoderInit(source, freeze))
  return Simulation(config, str(tmp_path), {"test": True})


def test_initial_global_encoder_is_the_source_and_then_trains(
    tmp_path, source_run):
  source, weights = source_run
  sim = simulation(tmp_path, source, freeze=False)
  initial = sim.rounds.initial_state()
  # The classifier's trainable weights: the encoder's first, then the head.
  assert len(initial.trainable) == len(weights) + 2
  for a, b in zip(initial.trainable, weights):
    np.testing.assert_array_equal(a, b)
  summary = sim.run()
  sim.close()
  assert summary["init_encoder"]["kind"] == "centralized"
  assert not np.allclose(sim.final_state.trainable[0], weights[0])


def test_frozen_encoder_is_neither_trained_nor_aggregated(tmp_path,
                                                        source_run):
  source, weights = source_run
  sim = simulation(tmp_path, source, freeze=True)
  initial = sim.rounds.initial_state()
  assert len(initial.trainable) == 2  # the head's kernel and bias only
  summary = sim.run()
  sim.close()
  assert summary["rounds_run"] == 2
  assert not np.allclose(sim.final_state.trainable[0], initial.trainable[0])
  encoder = sim.eval_model.get_layer("encoder")
  # Frozen weights travel as non-trainable state: the clients' weighted
  # mean of identical values, equal up to float rounding.
  for a, b in zip(encoder.get_weights(), weights):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_init_encoder_is_for_the_supervised_objective(tmp_path, source_run):
  from fedclf.ssl import SslConfig  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(
      tiny_config(), objective="simclr", ssl=SslConfig(method="simclr"),
      encoder_init=EncoderInit(source_run[0]))
  with pytest.raises(UserError, match="does not apply to --objective=simclr"):
    Simulation(config, str(tmp_path), {"test": True})


def test_standardized_head_starts_from_the_clients_feature_statistics(
    tmp_path, source_run):
  source, _ = source_run
  base = tiny_config(rounds=2)
  config = dataclasses.replace(
      base, encoder_init=EncoderInit(source, freeze=True),
      model=dataclasses.replace(base.model, standardize_features=True))
  sim = Simulation(config, str(tmp_path), {"test": True})
  encoder = sim.eval_model.get_layer("encoder")
  images = np.concatenate([sim.ds.x_train[c] for c in sim.clients])
  features = encoder(sim.data.normalization.apply(images)).numpy()
  layer = sim.eval_model.get_layer("head").get_layer(
      "feature_standardization")
  initial_mean = layer.mean.numpy().copy()
  np.testing.assert_allclose(initial_mean, features.mean(axis=0), atol=1e-4)
  # The statistics are in the initial global model's non-trainable state,
  # so every client's replica standardizes with them.
  initial = sim.rounds.initial_state()
  assert any(np.allclose(w, initial_mean) for w in initial.non_trainable)
  summary = sim.run()
  sim.close()
  assert summary["feature_standardization"]["examples"] == len(images)
  assert summary["feature_standardization"]["image_sets"] == len(sim.clients)
  # Never trained: the final global model's statistics are the initial
  # ones (the clients' weighted mean of identical values).
  assert any(np.allclose(w, initial_mean, rtol=1e-6, atol=1e-6)
             for w in sim.final_state.non_trainable)
