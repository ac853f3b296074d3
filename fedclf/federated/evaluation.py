"""Evaluators of the round loop: how a server state's global model is scored.

- `ClassificationEvaluator`: the global model on the test set, on the
  held-out validation split, on a seeded sample of clients' own data
  (percentiles of client accuracy), and, for algorithms that personalize,
  after local fine-tuning on each sampled client (`Personalization`).
- `KnnEvaluator`: self-supervised runs, whose global model is an encoder:
  kNN accuracy of its frozen features.

Each loads the state into its own evaluation model (`load_state`) and reads
nothing else of the run, so the loop can call it at any round, also for a
round restored from a checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from fedclf.data.preprocess import Normalization
from fedclf.federated import rounds as rounds_lib
from fedclf.federated.rounds import ServerState
from fedclf.ssl.evaluate import knn_accuracy
from fedclf.train.loop import evaluate_classifier
from fedclf.train.loop import predict_logits

Arrays = Tuple[np.ndarray, np.ndarray]


def load_state(model: tf.keras.Model, state: ServerState) -> None:
  """Assigns the server state's weights in the order the backends read them
  (trainable_variables, then non_trainable_variables)."""
  for var, value in zip(model.trainable_variables, state.trainable):
    var.assign(value)
  for var, value in zip(model.non_trainable_variables, state.non_trainable):
    var.assign(value)


def percentiles(values: Sequence[float]) -> Dict[str, float]:
  if not len(values):
    return {}
  v = np.asarray(values)
  return {"mean": float(v.mean()), "p10": float(np.percentile(v, 10)),
          "p50": float(np.percentile(v, 50)),
          "p90": float(np.percentile(v, 90)), "min": float(v.min()),
          # q-FedAvg's fairness measure (Li et al. 2020).
          "var": float(v.var())}


def _fine_tune_step(model: tf.keras.Model, lr: float):
  @tf.function
  def step(images, labels):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
          labels, logits, from_logits=True))
    grads = tape.gradient(loss, model.trainable_variables)
    for v, g in zip(model.trainable_variables, grads):
      v.assign_sub(lr * g)
  return step


@dataclasses.dataclass(frozen=True)
class ClientData:
  """The clients' training data as the evaluators see it: the images as
  loaded (`x`, normalized by the evaluator like the test set), the same
  images normalized as the clients train on them (`x_model`), the labels
  and each client's indices into them."""
  x: np.ndarray
  x_model: np.ndarray
  y: np.ndarray
  clients: Sequence[np.ndarray]


@dataclasses.dataclass(frozen=True)
class Personalization:
  """Reptile-style evaluation: fine-tune on 80% of a client's data for
  `steps` SGD steps of `batch_size` at `lr`, score on the other 20%."""
  steps: int
  lr: float
  batch_size: int


class ClassificationEvaluator:
  """Test, validation, per-client and personalized accuracy of a
  classifier's global model."""

  def __init__(self, model: tf.keras.Model, test: Arrays,
               validation: Optional[Arrays], normalization: Normalization,
               num_classes: int, batch_size: int, clients: ClientData,
               per_client_eval: int, seed: int,
               personalization: Optional[Personalization] = None):
    self.model = model
    self.test = test
    self.validation = validation
    self.normalization = normalization
    self.num_classes = num_classes
    self.batch_size = batch_size
    self.clients = clients
    self.per_client_eval = per_client_eval
    self.seed = seed
    self.personalization = personalization
    # The last evaluation's per-client accuracies, for the distribution
    # plot the run writes at its end (client_accuracy.json).
    self.client_accuracies: Optional[Dict] = None

  def _report(self, data: Arrays) -> Dict:
    return evaluate_classifier(self.model, data, self.normalization,
                               self.num_classes, batch_size=self.batch_size)

  def evaluate(self, state: ServerState, round_num: int) -> Dict[str, float]:
    load_state(self.model, state)
    report = self._report(self.test)
    metrics = {"test_accuracy": report["accuracy"],
               "test_macro_f1": report["macro_f1"],
               "test_loss": report["loss"]}
    if self.validation is not None:
      val = self._report(self.validation)
      metrics.update({"val_accuracy": val["accuracy"],
                      "val_loss": val["loss"]})
    if self.per_client_eval:
      metrics.update(self._per_client(state, round_num))
    return metrics

  def _per_client(self, state: ServerState,
                  round_num: int) -> Dict[str, float]:
    clients = self.clients.clients
    rng = rounds_lib.round_rng(self.seed, round_num, 99)
    chosen = np.sort(rng.choice(len(clients), size=min(
        self.per_client_eval, len(clients)), replace=False))
    accs = []
    for cid in chosen:
      idx = clients[cid]
      accs.append(self._accuracy(self.clients.x[idx], self.clients.y[idx],
                                 self.batch_size))
    metrics = {f"client_accuracy_{k}": v for k, v in percentiles(accs).items()}
    self.client_accuracies = {"round": round_num,
                              "clients": [int(c) for c in chosen],
                              "accuracy": accs}
    if self.personalization is not None:
      metrics.update(self._personalized(state, chosen, round_num))
    return metrics

  def _personalized(self, state: ServerState, chosen: np.ndarray,
                    round_num: int) -> Dict[str, float]:
    """Fine-tunes the global model on 80% of each chosen client's data and
    scores it on the other 20%, before and after."""
    config = self.personalization
    step = _fine_tune_step(self.model, config.lr)
    x, x_model, y = self.clients.x, self.clients.x_model, self.clients.y
    before, after = [], []
    for cid in chosen:
      idx = rounds_lib.round_rng(self.seed, 0, 5000 + int(cid)).permutation(
          self.clients.clients[cid])
      cut = max(1, int(0.8 * len(idx)))
      support, query = idx[:cut], idx[cut:]
      if len(query) == 0:
        continue
      load_state(self.model, state)
      before.append(self._accuracy(x[query], y[query]))
      rng = rounds_lib.round_rng(self.seed, round_num, 6000 + int(cid))
      for _ in range(config.steps):
        pick = rng.choice(support, size=min(config.batch_size, len(support)),
                          replace=False)
        step(tf.constant(x_model[pick]),
             tf.constant(y[pick].astype(np.int64)))
      after.append(self._accuracy(x[query], y[query]))
    load_state(self.model, state)
    return {"personal_query_accuracy_before": float(np.mean(before)),
            "personal_query_accuracy_after": float(np.mean(after))}

  def _accuracy(self, x: np.ndarray, y: np.ndarray,
                batch_size: int = 512) -> float:
    logits = predict_logits(self.model, x, self.normalization, batch_size)
    return float(np.mean(logits.argmax(-1) == y))


class KnnEvaluator:
  """Self-supervised global models: kNN accuracy of the encoder's frozen
  features, with a seeded labelled subset of the training set as the
  references ("test_accuracy" is that kNN accuracy)."""

  def __init__(self, model: tf.keras.Model, references: Arrays, test: Arrays,
               normalization: Normalization):
    self.model = model
    self.references = references
    self.test = test
    self.normalization = normalization

  def evaluate(self, state: ServerState, round_num: int) -> Dict[str, float]:
    del round_num  # Every round is scored alike.
    load_state(self.model, state)
    accuracy = knn_accuracy(self.model.encoder, self.references, self.test,
                            self.normalization)
    return {"test_accuracy": accuracy, "knn_accuracy": accuracy}


def knn_references(x: np.ndarray, y: np.ndarray, limit: int,
                   seed: int) -> Arrays:
  """A seeded labelled subset of the training set for kNN evaluation."""
  n = len(y)
  keep = np.sort(np.random.default_rng(seed).permutation(n)[:min(n, limit)])
  return x[keep], y[keep]

