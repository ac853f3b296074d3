"""Training objectives of a federated simulation: what the clients learn and
how the global model is scored.

An `Objective` builds the model the clients train, says what the clients'
inputs are, which loss their client work minimizes (None: the algorithm's
own supervised loss), the evaluator of the global model, and what the run's
summary adds at the end. The round loop and the backends are the same for
every objective.

- `SupervisedObjective`: a zoo classifier on standardized (or [0, 1])
  images, cross-entropy; test, validation, per-client and personalized
  accuracy.
- `SelfSupervisedObjective`: an encoder and an SSL method's heads trained
  on unlabelled images with the method's loss (FedSimCLR / FedU style);
  kNN accuracy during training, a linear probe at the end.

Federated domain adaptation's objectives (source-only, f-DANN,
self-training, target oracle) live with the other adaptation methods in
`fedclf.adapt.unlabelled_target_clients`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Protocol, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from fedclf.data import ImageDataset
from fedclf.data.preprocess import Normalization
from fedclf.federated.evaluation import ClassificationEvaluator
from fedclf.federated.evaluation import ClientData
from fedclf.federated.evaluation import KnnEvaluator
from fedclf.federated.evaluation import knn_references
from fedclf.federated.evaluation import load_state
from fedclf.federated.evaluation import Personalization
from fedclf.federated.round_loop import Evaluator
from fedclf.federated.rounds import ServerState
from fedclf.federated.ssl_objective import build_ssl_trainable
from fedclf.federated.ssl_objective import ssl_objective
from fedclf.models import build_classifier
from fedclf.models import ModelConfig
from fedclf.ssl.augment import default_for
from fedclf.ssl.method import SslConfig
from fedclf.ssl.evaluate import linear_probe


@dataclasses.dataclass(frozen=True)
class FederatedData:
  """A simulation's data after the split: the dataset (its training part
  without the validation hold-out), the validation hold-out, the clients'
  example indices and the input normalization."""
  dataset: ImageDataset
  validation: Optional[Tuple[np.ndarray, np.ndarray]]
  clients: Sequence[np.ndarray]
  normalization: Normalization
  # Each client's own held-out test part (--client_test_fraction; `clients`
  # are then the training parts), or None.
  client_test: Optional[Sequence[np.ndarray]] = None


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
  """How a classifier's global model is scored (see ClassificationEvaluator)."""
  batch_size: int = 1000
  per_client_eval: int = 20
  seed: int = 0
  personalization: Optional[Personalization] = None
  knn_train_examples: int = 10000  # self-supervised: labelled references


class Objective(Protocol):
  """What the clients learn; see the module docstring."""

  name: str

  def client_inputs(self) -> np.ndarray:
    """The training images as the clients' batches carry them."""

  def client_loss(self) -> Optional[Callable]:
    """A client objective with `client_work.masked_loss_and_correct`'s
    signature, or None for the algorithm's own."""

  def build_model(self) -> tf.keras.Model:
    """A fresh model whose weights the server broadcasts and aggregates."""

  def evaluator(self, model: tf.keras.Model) -> Evaluator:
    """Scores the global model (loaded into `model`)."""

  def final_metrics(self, model: tf.keras.Model,
                    state: ServerState) -> Dict:
    """Fields the run's summary adds after the last round."""

  def final_model(self, model: tf.keras.Model) -> Tuple[tf.keras.Model, str]:
    """What the run folder keeps of the global model (loaded into `model`)
    and the run kind it records (see fedclf.results.trained_run)."""


class SupervisedObjective:
  """Cross-entropy on labelled clients: the classic federated task."""

  name = "supervised"

  def __init__(self, data: FederatedData, model_name: str,
               model_config: ModelConfig, settings: EvaluationSettings):
    self.data = data
    self.model_name = model_name
    self.model_config = model_config
    self.settings = settings
    self._inputs = data.normalization.apply(data.dataset.x_train).astype(
        np.float32)

  def client_inputs(self) -> np.ndarray:
    return self._inputs

  def client_loss(self) -> Optional[Callable]:
    return None

  def build_model(self) -> tf.keras.Model:
    ds = self.data.dataset
    return build_classifier(self.model_name, ds.input_shape, ds.num_classes,
                            self.model_config)

  def evaluator(self, model: tf.keras.Model) -> ClassificationEvaluator:
    ds, settings = self.data.dataset, self.settings
    return ClassificationEvaluator(
        model, (ds.x_test, ds.y_test), self.data.validation,
        self.data.normalization, ds.num_classes, settings.batch_size,
        ClientData(ds.x_train, self._inputs, ds.y_train, self.data.clients,
                   self.data.client_test),
        settings.per_client_eval, settings.seed, settings.personalization)

  def final_metrics(self, model: tf.keras.Model, state: ServerState) -> Dict:
    return {}

  def final_model(self, model: tf.keras.Model) -> Tuple[tf.keras.Model, str]:
    return model, "federated"


class SelfSupervisedObjective:
  """An SSL method's loss on unlabelled client images."""

  def __init__(self, data: FederatedData, model_name: str,
               model_config: ModelConfig, ssl: SslConfig,
               settings: EvaluationSettings):
    self.name = ssl.method
    self.data = data
    self.model_name = model_name
    self.model_config = model_config
    self.ssl = ssl
    self.settings = settings

  def client_inputs(self) -> np.ndarray:
    # SSL augments in pixel space and normalizes the views itself.
    return self.data.dataset.x_train.astype(np.float32)

  def client_loss(self) -> Optional[Callable]:
    ds = self.data.dataset
    return ssl_objective(default_for(ds.name, ds.input_shape[-1]),
                         self.data.normalization, self.ssl.method)

  def build_model(self) -> tf.keras.Model:
    ds = self.data.dataset
    return build_ssl_trainable(self.model_name, ds.input_shape,
                               ds.num_classes, self.model_config, self.ssl)

  def evaluator(self, model: tf.keras.Model) -> KnnEvaluator:
    ds = self.data.dataset
    references = knn_references(ds.x_train, ds.y_train,
                                self.settings.knn_train_examples,
                                self.settings.seed)
    return KnnEvaluator(model, references, (ds.x_test, ds.y_test),
                        self.data.normalization)

  def final_metrics(self, model: tf.keras.Model, state: ServerState) -> Dict:
    ds = self.data.dataset
    load_state(model, state)
    probe = linear_probe(model.encoder, (ds.x_train, ds.y_train),
                         (ds.x_test, ds.y_test), self.data.normalization,
                         ds.num_classes)
    logging.info("linear probe test accuracy %.4f", probe["accuracy"])
    return {"objective": self.name,
            "evaluation": "knn during training, linear probe at the end",
            "linear_probe_accuracy": probe["accuracy"],
            "linear_probe_macro_f1": probe["macro_f1"]}

  def final_model(self, model: tf.keras.Model) -> Tuple[tf.keras.Model, str]:
    # The heads only serve the pretraining loss; the encoder is the product.
    return model.encoder, "federated_ssl"
