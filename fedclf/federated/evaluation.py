"""Evaluators of the round loop: how a server state's global model is scored.

- `ClassificationEvaluator`: the global model on the test set, on the
  held-out validation split, on a seeded sample of clients' own data
  (percentiles of client accuracy), and, with each client's own held-out
  test part (`--client_test_fraction`), the global model and each sampled
  client's personal model there (`Personalization`: the algorithm's
  personal model, optionally fine-tuned).
- `KnnEvaluator`: self-supervised runs, whose global model is an encoder:
  kNN accuracy of its frozen features.

Each loads the state into its own evaluation model (`load_state`) and reads
nothing else of the run, so the loop can call it at any round, also for a
round restored from a checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

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
  and each client's indices into them (the part it trains on); with
  `--client_test_fraction`, each client's own held-out test part."""
  x: np.ndarray
  x_model: np.ndarray
  y: np.ndarray
  clients: Sequence[np.ndarray]
  test_clients: Optional[Sequence[np.ndarray]] = None


@dataclasses.dataclass(frozen=True)
class Personalization:
  """How a client's personal model is made and scored on its own test
  part: the algorithm's client work `work` makes it from the global model
  and the client's state (`personalize`; None: the global model), then
  `steps` SGD steps of `batch_size` at `lr` on the client's training part
  fine-tune it (0: none)."""
  steps: int
  lr: float
  batch_size: int
  work: Any = None


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
    # The clients' persistent states (FedPer's heads, Ditto's models), the
    # round loop's dict, updated in place every round.
    self.client_states: Dict[int, List] = {}
    self._fine_tune = None

  def watch_client_states(self, client_states: Dict[int, List]) -> None:
    """Reads personal models from `client_states` (see RoundLoop.run)."""
    self.client_states = client_states

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
    if (self.personalization is not None and
        self.clients.test_clients is not None):
      metrics.update(self._personalized(state, chosen, round_num))
    return metrics

  def _personalized(self, state: ServerState, chosen: np.ndarray,
                    round_num: int) -> Dict[str, float]:
    """Scores the global model and each chosen client's personal model
    (fine-tuned, if asked) on the client's own test part."""
    x, y = self.clients.x, self.clients.y
    before, after = [], []
    for cid in chosen:
      test = self.clients.test_clients[cid]
      if not len(test):
        continue
      load_state(self.model, state)
      before.append(self._accuracy(x[test], y[test]))
      self._personal_model(int(cid), round_num)
      after.append(self._accuracy(x[test], y[test]))
    load_state(self.model, state)
    metrics = {f"global_on_clients_accuracy_{k}": v
               for k, v in percentiles(before).items()}
    metrics.update({f"personal_accuracy_{k}": v
                    for k, v in percentiles(after).items()})
    if after:
      # The names reptile's 80/20 evaluation reported before the held-out
      # split replaced it (TensorBoard tags, the guide).
      metrics["personal_query_accuracy_before"] = float(np.mean(before))
      metrics["personal_query_accuracy_after"] = float(np.mean(after))
    return metrics

  def _personal_model(self, cid: int, round_num: int) -> None:
    """Turns the loaded global model into client `cid`'s personal model:
    the algorithm's rule, then fine-tuning on its training part (seeded by
    (seed, round, client))."""
    config = self.personalization
    if config.work is not None:
      config.work.personalize(self.model, self.client_states.get(cid))
    if not config.steps:
      return
    if self._fine_tune is None:
      self._fine_tune = _fine_tune_step(self.model, config.lr)
    support = self.clients.clients[cid]
    rng = rounds_lib.round_rng(self.seed, round_num, 6000 + cid)
    for _ in range(config.steps):
      batch = rng.choice(support, size=min(config.batch_size, len(support)),
                         replace=False)
      self._fine_tune(tf.constant(self.clients.x_model[batch]),
                      tf.constant(self.clients.y[batch].astype(np.int64)))

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

