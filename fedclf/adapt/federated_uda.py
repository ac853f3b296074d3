"""Federated unsupervised domain adaptation: labelled source clients,
unlabelled target clients.

Clients each hold one domain: `source_clients` hold labelled source images,
`target_clients` hold target images whose labels they do not have (the
setting of Peng et al. 2020, "Federated adversarial domain adaptation").
Each round the server samples clients and broadcasts the model (zoo
encoder and head, plus DANN's domain classifier); each sampled client
trains it locally with plain SGD for `local_epochs` over its images; the
server adds the weighted mean of the clients' changes (FedAvg). Per method:

- source_only: only the labelled clients train (cross-entropy); the target
  clients, without labels, sit out. FedAvg without adaptation.
- dann: every client also trains the domain classifier on its own features
  through the gradient-reversal layer (domain 0 on source clients, 1 on
  target clients), so the target clients' unlabelled images shape the
  shared encoder (f-DANN, Peng et al.'s baseline). lambda follows DANN's
  schedule over the rounds. A client sees a single domain, so its local
  domain classifier can separate "the domains" by its bias alone; the
  adversarial signal reaching the encoder is correspondingly weak.
- self_training: after `warmup_rounds` of source-only rounds, each target
  client labels its own images with the broadcast model and trains on the
  ones predicted with probability >= `pseudo_label_threshold` (federated
  pseudo-labelling; nothing but model updates leaves a client).
- target_oracle: the target clients train on their labels too (the upper
  bound).

A client's change is weighted by the images it learned from (for the head:
the labelled or pseudo-labelled ones; others leave the head unchanged, and
averaging in their zero changes would only shrink its step). This loop
exists beside `fedclf.federated` because its backends move one model and
one loss; adaptation needs a second model (the domain classifier) and a
loss that depends on the client's domain. For any other federated algorithm
on clients that all hold labels, see `fedclf.adapt.federated`
(`run_federated_adaptation`).

Every random choice (client split, sampling, batch order) derives from
(seed, round, client), and checkpoints hold the global model and the round,
so a resumed run replays the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from fedclf.adapt.core import AdaptationTask
from fedclf.adapt.core import DomainNormalizations
from fedclf.adapt.domains import DomainPair
from fedclf.adapt.grl import dann_lambda
from fedclf.adapt.methods.dann import build_dann_models
from fedclf.adapt.methods.dann import domain_loss_and_correct
from fedclf.adapt.run import AdaptRunConfig
from fedclf.errors import DivergenceError
from fedclf.errors import UserError
from fedclf.results import RunRecorder
from fedclf.results.trained_run import write_final_model
from fedclf.data.preprocess import Normalization
from fedclf.train.loop import checkpoint_manager
from fedclf.train.loop import evaluate_classifier
from fedclf.train.loop import predict_logits

FEDERATED_METHODS = ("source_only", "dann", "self_training", "target_oracle")
SOURCE, TARGET = 0, 1
# The clients' images are standardized once up front.
IDENTITY = Normalization((0.0,), (1.0,))


@dataclasses.dataclass(frozen=True)
class FederatedAdaptConfig:
  """The federation of a federated adaptation run.

  Attributes:
    source_clients, target_clients: clients holding an IID share of the
      source's (labelled) and of the target's training images.
    clients_per_round: clients sampled each round (from all of them).
    rounds: communication rounds.
    local_epochs: passes of a client over its images per round.
    local_batch_size: the clients' batch size.
    client_lr: the clients' SGD learning rate.
    eval_every: score the global model on both test sets every this many
      rounds (and after the last); a learning curve only, nothing is
      selected on it.
    checkpoint_every: rounds between checkpoints (0 = none).
    seed: the seed of the client split, the sampling and batch orders.
    warmup_rounds: self_training: rounds before the target clients start
      pseudo-labelling (the model learns the source first).
    pseudo_label_threshold: self_training: the softmax probability a
      prediction needs to become a training label.
  """
  source_clients: int = 5
  target_clients: int = 5
  clients_per_round: int = 10
  rounds: int = 50
  local_epochs: int = 1
  local_batch_size: int = 32
  client_lr: float = 0.05
  eval_every: int = 5
  checkpoint_every: int = 10
  seed: int = 0
  warmup_rounds: int = 10
  pseudo_label_threshold: float = 0.9

  @property
  def num_clients(self) -> int:
    return self.source_clients + self.target_clients

  def validate(self) -> None:
    if self.source_clients < 1 or self.target_clients < 1:
      raise UserError(f"federated adaptation needs at least one source and "
                      f"one target client, got {self.source_clients} and "
                      f"{self.target_clients}")
    if not 1 <= self.clients_per_round <= self.num_clients:
      raise UserError(f"clients_per_round must be in [1, {self.num_clients}]"
                      f", got {self.clients_per_round}")
    for name in ("rounds", "local_epochs", "local_batch_size"):
      if getattr(self, name) < 1:
        raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
    if not (math.isfinite(self.client_lr) and self.client_lr > 0):
      raise UserError(f"client_lr must be > 0, got {self.client_lr}")
    if min(self.eval_every, self.checkpoint_every, self.seed,
           self.warmup_rounds) < 0:
      raise UserError("eval_every, checkpoint_every, seed and warmup_rounds "
                      "must be >= 0")
    if not 0.0 <= self.pseudo_label_threshold <= 1.0:
      raise UserError(f"pseudo_label_threshold must be in [0, 1], got "
                      f"{self.pseudo_label_threshold}")


@dataclasses.dataclass(frozen=True)
class Client:
  domain: int  # SOURCE or TARGET
  indices: np.ndarray  # into that domain's training set


def split_clients(n_source: int, n_target: int, config: FederatedAdaptConfig
                  ) -> List[Client]:
  """Source clients first, then target clients, each an IID seeded share
  of its domain's training set (sizes differ by at most one)."""
  rng = np.random.default_rng([config.seed, 0])
  clients = []
  for domain, n, count in ((SOURCE, n_source, config.source_clients),
                           (TARGET, n_target, config.target_clients)):
    if n < count:
      raise UserError(f"{count} clients cannot share {n} training images")
    for part in np.array_split(rng.permutation(n), count):
      clients.append(Client(domain, np.sort(part)))
  return clients


def _round_lambda(method: str, round_num: int, rounds: int, gamma: float,
                  weight: float) -> float:
  if method != "dann":
    return 0.0
  return dann_lambda((round_num - 1) / rounds, gamma, weight)


def train_federated(pair: DomainPair, task: AdaptationTask, method: str,
                    config: FederatedAdaptConfig,
                    recorder: Optional[RunRecorder] = None,
                    checkpoint_dir: Optional[str] = None,
                    resume: bool = False
                    ) -> Tuple[tf.keras.Model, DomainNormalizations, Dict]:
  """Runs the federation; returns (global model, normalizations, details).

  Target training labels are read by `target_oracle` only.
  """
  if method not in FEDERATED_METHODS:
    raise UserError(f"federated adaptation runs {', '.join(FEDERATED_METHODS)}"
                    f"; got {method!r}")
  config.validate()
  dann_config = task.config.dann
  normalizations = task.normalizations()
  data = {
      SOURCE: (normalizations.source.apply(pair.source.x_train)
               .astype(np.float32), pair.source.y_train.astype(np.int64)),
      TARGET: (normalizations.target.apply(pair.target.x_train)
               .astype(np.float32),
               pair.target.y_train.astype(np.int64)
               if method == "target_oracle" else
               # Never passed on: the clients do not have them.
               np.zeros(len(pair.target.y_train), np.int64)),
  }
  clients = split_clients(len(data[SOURCE][1]), len(data[TARGET][1]), config)

  models = build_dann_models(task)
  model, head, tap = models.model, models.head, models.tap
  domain_classifier = models.domain_classifier
  # Averaged over every client that trained / over labelled clients only.
  body = model.get_layer("encoder").variables + domain_classifier.variables
  head_vars = head.variables
  trainable = model.trainable_variables + domain_classifier.trainable_variables
  optimizer = tf.keras.optimizers.SGD(config.client_lr)

  round_var = tf.Variable(0, dtype=tf.int64, trainable=False)
  ckpt = tf.train.Checkpoint(model=model, domain_classifier=domain_classifier,
                             round=round_var)
  manager = checkpoint_manager(ckpt, checkpoint_dir, config.checkpoint_every,
                               resume, round_var, "federated: ")

  @tf.function(reduce_retracing=True)
  def client_step(images, labels, label_weights, domain, lambda_,
                  adversarial):
    with tf.GradientTape() as tape:
      domain_features, features = tap(images, training=True)
      logits = head(features, training=True)
      # Mean cross-entropy over the examples with a (pseudo-)label.
      class_loss = tf.reduce_sum(
          label_weights * tf.nn.sparse_softmax_cross_entropy_with_logits(
              labels, logits)) / tf.maximum(tf.reduce_sum(label_weights), 1.0)
      domain_labels = tf.fill([tf.shape(images)[0]], domain)
      domain_loss, domain_correct = domain_loss_and_correct(
          domain_classifier, domain_features, domain_labels, lambda_)
      loss = class_loss + adversarial * domain_loss
      if model.losses:
        loss += tf.add_n(model.losses)
    grads = tape.gradient(loss, trainable)
    optimizer.apply_gradients(zip(grads, trainable))
    return class_loss, domain_loss, domain_correct

  def assign(variables: Sequence[tf.Variable], values) -> None:
    for var, value in zip(variables, values):
      var.assign(value)

  def client_labels(client: Client, round_num: int
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """(labels, weights) of the client's images: its own labels (weight
    1), confident pseudo-labels of the broadcast model (self_training's
    target clients after the warm-up; weight 1 where confident), or none
    (weight 0)."""
    x, y = data[client.domain]
    idx = client.indices
    if client.domain == SOURCE or method == "target_oracle":
      return y[idx], np.ones(len(idx), np.float32)
    if method == "self_training" and round_num > config.warmup_rounds:
      logits = predict_logits(model, x[idx], IDENTITY,
                              task.config.train.eval_batch_size)
      probs = tf.nn.softmax(logits).numpy()
      confident = probs.max(-1) >= config.pseudo_label_threshold
      return probs.argmax(-1).astype(np.int64), confident.astype(np.float32)
    return np.zeros(len(idx), np.int64), np.zeros(len(idx), np.float32)

  def train_client(client: Client, client_id: int, round_num: int,
                   lambda_: float, labels: np.ndarray,
                   weights: np.ndarray) -> np.ndarray:
    """Local epochs on one client (labels and weights aligned with its
    indices); returns [weighted class loss, domain loss, domain correct,
    examples, labelled examples] summed over its batches."""
    x = data[client.domain][0]
    rng = np.random.default_rng([config.seed, round_num, client_id])
    sums = np.zeros(5)
    batch = config.local_batch_size
    for _ in range(config.local_epochs):
      order = rng.permutation(len(client.indices))
      for start in range(0, len(order), batch):
        pos = order[start:start + batch]
        out = client_step(
            tf.constant(x[client.indices[pos]]), tf.constant(labels[pos]),
            tf.constant(weights[pos]), tf.constant(float(client.domain)),
            tf.constant(lambda_, tf.float32),
            tf.constant(1.0 if method == "dann" else 0.0))
        labelled = float(weights[pos].sum())
        sums += [float(out[0]) * labelled, float(out[1]) * len(pos),
                 float(out[2]), len(pos), labelled]
    return sums

  history: List[Dict] = []
  train_seconds = 0.0
  global_body = [v.numpy() for v in body]
  global_head = [v.numpy() for v in head_vars]
  for round_num in range(int(round_var.numpy()) + 1, config.rounds + 1):
    t0 = time.time()
    rng = np.random.default_rng([config.seed, round_num])
    sampled = np.sort(rng.choice(len(clients), config.clients_per_round,
                                 replace=False))
    lambda_ = _round_lambda(method, round_num, config.rounds,
                            dann_config.gamma, dann_config.domain_weight)
    body_sum = [np.zeros_like(w) for w in global_body]
    head_sum = [np.zeros_like(w) for w in global_head]
    body_weight = head_weight = 0.0
    totals = np.zeros(5)
    trained = pseudo_labelled = 0
    for client_id in sampled:
      client = clients[client_id]
      assign(body, global_body)
      assign(head_vars, global_head)
      labels, weights = client_labels(client, round_num)
      labelled = float(weights.sum())
      if client.domain == TARGET and method == "self_training":
        pseudo_labelled += int(labelled)
      if not labelled and method != "dann":
        continue  # Nothing to learn from without labels or adaptation.
      sums = train_client(client, int(client_id), round_num, lambda_,
                          labels, weights)
      trained += 1
      totals += sums
      n = float(len(client.indices)) if method == "dann" else labelled
      body_weight += n
      for acc, var, old in zip(body_sum, body, global_body):
        acc += n * (var.numpy() - old)
      if labelled:
        head_weight += labelled
        for acc, var, old in zip(head_sum, head_vars, global_head):
          acc += labelled * (var.numpy() - old)
    if body_weight:
      global_body = [w + s / body_weight for w, s in zip(global_body,
                                                          body_sum)]
    if head_weight:
      global_head = [w + s / head_weight for w, s in zip(global_head,
                                                          head_sum)]
    assign(body, global_body)
    assign(head_vars, global_head)
    round_seconds = time.time() - t0
    train_seconds += round_seconds
    row = {"lambda": lambda_, "round_seconds": round_seconds,
           "clients_trained": trained}
    if totals[4]:
      row["train_loss"] = totals[0] / totals[4]
    if method == "self_training":
      row["pseudo_labels"] = pseudo_labelled
    if method == "dann" and totals[3]:
      row["domain_loss"] = totals[1] / totals[3]
      # Each client's own domain classifier after its local epochs; near
      # 0.5 means the features no longer tell the domains apart.
      row["domain_accuracy"] = totals[2] / totals[3]
    if not all(math.isfinite(v) for v in row.values()) or not all(
        np.all(np.isfinite(w)) for w in global_body + global_head):
      raise DivergenceError(
          f"federated {method} diverged at round {round_num}; lower "
          f"--client_lr or --dann_weight")
    if (config.eval_every and round_num % config.eval_every == 0) or (
        round_num == config.rounds):
      for name, ds, norm in (("test_accuracy", pair.target,
                              normalizations.target),
                             ("source_test_accuracy", pair.source,
                              normalizations.source)):
        row[name] = evaluate_classifier(
            model, (ds.x_test, ds.y_test), norm, pair.num_classes,
            batch_size=task.config.train.eval_batch_size)["accuracy"]
    history.append({"round": round_num, **row})
    if recorder is not None:
      recorder.log_metrics(round_num, row, "round")
    logging.info("federated %s round %d/%d: %s", method, round_num,
                 config.rounds, {k: round(v, 4) for k, v in row.items()})
    round_var.assign(round_num)
    if manager and (round_num % config.checkpoint_every == 0 or
                    round_num == config.rounds):
      manager.save(checkpoint_number=round_num)
  details = {"rounds_run": int(round_var.numpy()),
             "train_seconds": round(train_seconds, 3),
             "federated": dataclasses.asdict(config),
             "client_sizes": [int(len(c.indices)) for c in clients]}
  if method == "dann":
    details["dann"] = dataclasses.asdict(dann_config)
    if history and "domain_accuracy" in history[-1]:
      details["final_domain_accuracy"] = history[-1]["domain_accuracy"]
  return model, normalizations, details


def run_federated_uda(config: AdaptRunConfig,
                       federated: FederatedAdaptConfig, out_dir: str,
                       run_config: Dict, resume: bool = False) -> Dict:
  """A federated adaptation run with the usual results files.

  Args:
    config: the domains, model, `method` (one of `FEDERATED_METHODS`) and
      `adapt.dann` / `adapt.normalization` (`adapt.train` is not read: the
      federation's training settings are in `federated`).
    federated: the federation.
    out_dir: results folder (config.json, metrics.jsonl with a row per
      round, summary.json, checkpoints/).
    run_config: what the user asked for (flags), recorded in config.json.
    resume: continue from the checkpoints in `out_dir`.

  Returns:
    The summary: `target_accuracy` and `source_accuracy` of the global
    model on each domain's test set (also as `domain_accuracy`, keyed by
    domain name), `test_accuracy` (the target's), `rounds_run`, ...
  """
  if config.method not in FEDERATED_METHODS:
    raise UserError(f"federated adaptation runs {', '.join(FEDERATED_METHODS)}"
                    f"; got {config.method!r}")
  # Everything but the method (self_training is federated only, so not in
  # ADAPTATION_METHODS).
  dataclasses.replace(config, method="source_only").validate()
  federated.validate()
  pair = config.load_pair()
  recorder = RunRecorder(out_dir, {"flags": run_config, "resolved": config,
                                   "federated": federated,
                                   "domains": pair.describe()}, resume=resume)
  task = AdaptationTask(pair, config.model_name, config.model, config.adapt)
  model, normalizations, details = train_federated(
      pair, task, config.method, federated, recorder,
      os.path.join(out_dir, "checkpoints"), resume)
  reports = {
      role: evaluate_classifier(model, (ds.x_test, ds.y_test), norm,
                                pair.num_classes, pair.class_names,
                                config.adapt.train.eval_batch_size)
      for role, ds, norm in (("target", pair.target, normalizations.target),
                             ("source", pair.source, normalizations.source))}
  target, source = reports["target"], reports["source"]
  summary = {
      "method": config.method,
      "federated_method": f"fedavg+{config.method}",
      "source": config.source,
      "target": config.target,
      "model": config.model_name,
      "dataset": {"name": f"{config.source}->{config.target} (federated)",
                  **pair.describe()},
      "num_clients": federated.num_clients,
      "clients_per_round": federated.clients_per_round,
      "target_accuracy": target["accuracy"],
      "target_macro_f1": target["macro_f1"],
      "source_accuracy": source["accuracy"],
      "source_macro_f1": source["macro_f1"],
      "test_accuracy": target["accuracy"],
      "test_macro_f1": target["macro_f1"],
      "domain_accuracy": {config.source: source["accuracy"],
                          config.target: target["accuracy"]},
      "target_confusion_matrix": target["confusion_matrix"],
      "normalization": config.adapt.normalization,
      **details,
  }
  write_final_model(recorder, model, "federated_domain_adaptation", summary,
                    normalizations.target)
  logging.info("federated %s %s -> %s: target accuracy %.4f, source "
               "accuracy %.4f (%s)", config.method, config.source,
               config.target, target["accuracy"], source["accuracy"], out_dir)
  return summary
