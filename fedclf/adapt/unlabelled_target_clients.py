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
- fixmatch: as self_training, but on every batch of a target client the
  broadcast model's confident predictions on a weakly augmented view label
  the strongly augmented view the client trains on (FixMatch, Sohn et al.
  2020, with the round's global model as the labeller; the source clients
  train on weak views); see `FixMatch`.
- target_oracle: the target clients train on their labels too (the upper
  bound).

Clients hold IID shares of their domain, or label-skewed ones
(`within_domain_alpha`: the Dirichlet partitioner within each domain).

A client's change is weighted by the images it learned from (for the head:
the labelled or pseudo-labelled ones; others leave the head unchanged, and
averaging in their zero changes would only shrink its step). Each method is
a small class (`SourceOnly` and its subclasses) saying which labels a
target client trains on, whether the domain loss joins, how a client's
change is weighted and what its metrics row adds.

The rounds run on fedclf's one round loop (`fedclf.federated.round_loop`):
`UdaRounds` is its round runner and `UdaEvaluator` its evaluator, so
checkpoints, --resume, Ctrl-C, divergence and the metrics rows behave as in
every federated run. The runner trains the sampled clients in this process
(one after the other): a client trains two models (classifier and domain
classifier) with a loss that depends on its domain, and the head and the
encoder are averaged with different weights, which the algorithm backends'
one-model client work and single-weight aggregation do not express. For
any other federated algorithm on clients that all hold labels, see
`fedclf.adapt.labelled_domain_clients` (`run_federated_adaptation`), which runs on those
backends.

Every random choice (client split, sampling, batch order) derives from
(seed, round, client), and checkpoints hold the global model and the round,
so a resumed run replays the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from fedclf.adapt.consistency import masked_pseudo_label_loss
from fedclf.adapt.consistency import standardized_views
from fedclf.adapt.task import AdaptationTask
from fedclf.adapt.task import DomainNormalizations
from fedclf.adapt.domains import DomainPair
from fedclf.adapt.grl import dann_lambda
from fedclf.adapt.methods.dann import build_dann_models
from fedclf.adapt.methods.dann import DannModels
from fedclf.adapt.methods.dann import DannParams
from fedclf.adapt.methods.dann import domain_loss_and_correct
from fedclf.adapt.centralized_run import AdaptRunConfig
from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.federated.round_loop import diverged
from fedclf.federated.round_loop import RoundLoop
from fedclf.federated.round_loop import RoundLoopConfig
from fedclf.federated.rounds import Checkpointer
from fedclf.federated.rounds import ServerState
from fedclf.partition import DirichletParams
from fedclf.partition import partition
from fedclf.partition import PartitionConfig
from fedclf.results import RunRecorder
from fedclf.results.run_folder import run_setting
from fedclf.results.tensorboard_log import start_run_log
from fedclf.results.trained_run import write_final_model
from fedclf.train.loop import evaluate_classifier
from fedclf.train.loop import predict_logits

Row = Dict[str, float]
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
    pseudo_label_threshold: self_training and fixmatch: the softmax
      probability a prediction needs to become a training label.
    within_domain_alpha: label skew of the clients within each domain: the
      Dirichlet concentration of the `dirichlet` partitioner (smaller is
      more skewed); 0 = IID shares. The split reads the target's labels,
      as any simulated non-IID split does; no client trains on them.
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
  within_domain_alpha: float = 0.0

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
    if not (math.isfinite(self.within_domain_alpha) and
            self.within_domain_alpha >= 0):
      raise UserError(f"within_domain_alpha must be >= 0 (0 = IID), got "
                      f"{self.within_domain_alpha}")


@dataclasses.dataclass(frozen=True)
class Client:
  domain: int  # SOURCE or TARGET
  indices: np.ndarray  # into that domain's training set


def split_clients(n_source: int, n_target: int, config: FederatedAdaptConfig,
                  labels: Optional[Sequence[np.ndarray]] = None
                  ) -> List[Client]:
  """Source clients first, then target clients, each a seeded share of its
  domain's training set: IID (sizes differ by at most one), or, with
  `config.within_domain_alpha` > 0, label-skewed by the `dirichlet`
  partitioner over `labels` (the source's and the target's)."""
  rng = np.random.default_rng([config.seed, 0])
  clients = []
  for domain, n, count in ((SOURCE, n_source, config.source_clients),
                           (TARGET, n_target, config.target_clients)):
    if n < count:
      raise UserError(f"{count} clients cannot share {n} training images")
    if config.within_domain_alpha:
      if labels is None:
        raise ValueError("a label-skewed split needs the labels")
      parts = partition(
          "dirichlet", labels[domain], PartitionConfig(
              count, seed=config.seed + domain,
              params=DirichletParams(config.within_domain_alpha)))
    else:
      parts = np.array_split(rng.permutation(n), count)
    clients.extend(Client(domain, np.sort(part)) for part in parts)
  return clients


class SourceOnly:
  """FedAvg without adaptation: only clients with labels train, and each
  client's change is weighted by its labelled examples."""

  name = "source_only"
  adversarial = False  # trains the domain classifier through the GRL
  reads_target_labels = False
  # Trains on weak/strong views with per-batch pseudo-labels (FixMatch).
  consistency = False

  def __init__(self, config: FederatedAdaptConfig, dann: DannParams):
    self.config = config
    self.dann = dann

  def round_lambda(self, round_num: int) -> float:
    del round_num  # No adversarial loss.
    return 0.0

  def round_lr(self, round_num: int) -> float:
    """The clients' SGD learning rate in round `round_num`."""
    del round_num  # Constant, but for the adversarial methods' annealing.
    return self.config.client_lr

  def target_labels(self, client: Client, round_num: int,
                    predict: Callable[[np.ndarray], np.ndarray]):
    """(labels, weights) of a target client's images: none here."""
    del round_num, predict  # The target clients have no labels.
    n = len(client.indices)
    return np.zeros(n, np.int64), np.zeros(n, np.float32)

  def body_weight(self, client: Client, labelled: float) -> float:
    """The weight of a client's encoder (and domain classifier) change."""
    del client  # Only labelled examples teach the encoder here.
    return labelled

  def row(self, totals: np.ndarray, target_labelled: int) -> Row:
    del totals, target_labelled  # Nothing beyond the common fields.
    return {}


class Dann(SourceOnly):
  """f-DANN: every client also trains the domain classifier on its own
  features through the gradient reversal layer, lambda on DANN's schedule
  over the rounds; every client's change counts by its images."""

  name = "dann"
  adversarial = True

  def round_lambda(self, round_num: int) -> float:
    return dann_lambda((round_num - 1) / self.config.rounds,
                       self.dann.dann_gamma, self.dann.dann_weight)

  def round_lr(self, round_num: int) -> float:
    """Ganin et al.'s annealing lr / (1 + alpha p)^beta (`dann_anneal_lr`),
    with the rounds as the training progress p, as for lambda."""
    lr = self.config.client_lr
    if not self.dann.dann_anneal_lr:
      return lr
    progress = (round_num - 1) / self.config.rounds
    return lr / (1.0 + self.dann.dann_alpha * progress)**self.dann.dann_beta

  def body_weight(self, client: Client, labelled: float) -> float:
    del labelled  # The unlabelled images shape the encoder too.
    return float(len(client.indices))

  def row(self, totals: np.ndarray, target_labelled: int) -> Row:
    if not totals[3]:
      return {}
    # Each client's own domain classifier after its local epochs; near
    # 0.5 means the features no longer tell the domains apart.
    return {"domain_loss": totals[1] / totals[3],
            "domain_accuracy": totals[2] / totals[3]}


class SelfTraining(SourceOnly):
  """After `warmup_rounds`, each target client labels its own images with
  the broadcast model and learns from the confident ones."""

  name = "self_training"

  def target_labels(self, client: Client, round_num: int,
                    predict: Callable[[np.ndarray], np.ndarray]):
    if round_num <= self.config.warmup_rounds:
      return super().target_labels(client, round_num, predict)
    probs = tf.nn.softmax(predict(client.indices)).numpy()
    confident = probs.max(-1) >= self.config.pseudo_label_threshold
    return probs.argmax(-1).astype(np.int64), confident.astype(np.float32)

  def row(self, totals: np.ndarray, target_labelled: int) -> Row:
    return {"pseudo_labels": target_labelled}


class FixMatch(SelfTraining):
  """Federated FixMatch: after `warmup_rounds`, each target client trains
  on every batch of its images with FixMatch's masked pseudo-label loss
  (`fedclf.adapt.consistency`): the round's broadcast model's confident
  predictions on weak views teach the client's predictions on strong
  views. (With the client's own, drifting model as the labeller, as
  centralized FixMatch does, a target client without source images in its
  batches reinforces its own mistakes: USPS accuracy fell from 0.66 to
  0.39 in a 60-round run.) The source clients train on weak views of their
  labelled images. A target client's change counts by its confident
  images (per local epoch)."""

  name = "fixmatch"
  consistency = True

  def target_labels(self, client: Client, round_num: int,
                    predict: Callable[[np.ndarray], np.ndarray]):
    if round_num <= self.config.warmup_rounds:
      return super().target_labels(client, round_num, predict)
    del predict  # The pseudo-labels come per batch, from the weak views.
    # Every image takes part; the labels are placeholders.
    n = len(client.indices)
    return np.zeros(n, np.int64), np.ones(n, np.float32)


class TargetOracle(SourceOnly):
  """Every client trains on its labels, the target's too (upper bound)."""

  name = "target_oracle"
  reads_target_labels = True

  def target_labels(self, client: Client, round_num: int,
                    predict: Callable[[np.ndarray], np.ndarray]):
    raise AssertionError("target_oracle's target clients hold labels")


FEDERATED_UDA_METHODS = {m.name: m for m in (SourceOnly, Dann, SelfTraining,
                                              FixMatch, TargetOracle)}
FEDERATED_METHODS = tuple(FEDERATED_UDA_METHODS)


def _client_step_fn(models: DannModels, lr: float):
  """One local SGD step of a client on a batch of one domain: the
  (pseudo-)labelled cross-entropy plus, for adversarial methods, the domain
  loss through the gradient reversal layer. Returns (class loss, domain
  loss, domain correct) and the variables it trains."""
  model, head, tap = models.model, models.head, models.tap
  domain_classifier = models.domain_classifier
  trainable = model.trainable_variables + domain_classifier.trainable_variables
  optimizer = tf.keras.optimizers.SGD(lr)

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

  return client_step, optimizer


def _consistency_step_fn(model: tf.keras.Model, teacher: tf.keras.Model,
                         lr: float, normalizations: DomainNormalizations,
                         threshold: float):
  """One local SGD step of federated FixMatch on a batch of one domain
  (a Python int, so each domain traces once): a source batch's
  cross-entropy on its weak view, or a target batch's masked pseudo-label
  loss with the pseudo-labels from `teacher` (the round's broadcast model)
  on the weak view. Returns (loss, examples that taught: the batch on a
  source client, the confident ones on a target client)."""
  variables = model.trainable_variables
  optimizer = tf.keras.optimizers.SGD(lr)

  @tf.function(reduce_retracing=True)
  def consistency_step(images, labels, seed, domain):
    norm = normalizations.source if domain == SOURCE else normalizations.target
    weak, strong = standardized_views(images, seed, norm,
                                      strong=domain == TARGET)
    n = tf.shape(images)[0]
    with tf.GradientTape() as tape:
      if domain == SOURCE:
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels, model(weak, training=True)))
        taught = tf.cast(n, tf.float32)
      else:
        loss, mask = masked_pseudo_label_loss(
            teacher(weak, training=False), model(strong, training=True),
            threshold)
        taught = tf.reduce_sum(mask)
      total = loss + tf.add_n(model.losses) if model.losses else loss
    grads = tape.gradient(total, variables)
    optimizer.apply_gradients(zip(grads, variables))
    return loss, taught

  return consistency_step


def _assign(variables: Sequence[tf.Variable], values) -> None:
  for var, value in zip(variables, values):
    var.assign(value)


class UdaRounds:
  """The round runner of federated adaptation (see the module docstring):
  the server state's weights are the encoder's and the domain classifier's
  variables (`body`), then the head's."""

  def __init__(self, method: SourceOnly, config: FederatedAdaptConfig,
               data: Dict[int, Tuple[np.ndarray, np.ndarray]],
               clients: List[Client], models: DannModels,
               eval_batch_size: int, checkpointer: Checkpointer,
               normalizations: DomainNormalizations):
    self.method = method
    self.config = config
    self.data = data
    self.clients = clients
    self.models = models
    self.eval_batch_size = eval_batch_size
    self.checkpointer = checkpointer
    # Averaged over every client that trained / over labelled clients only.
    self.body = (models.model.get_layer("encoder").variables +
                 models.domain_classifier.variables)
    self.head = models.head.variables
    self.client_step, self.client_optimizer = _client_step_fn(
        models, config.client_lr)
    if method.consistency:
      # The round's broadcast model, fixed while a client trains: its
      # pseudo-labels do not drift with the client's own local steps.
      self.teacher = tf.keras.models.clone_model(models.model)
      self.consistency_step = _consistency_step_fn(
          models.model, self.teacher, config.client_lr, normalizations,
          config.pseudo_label_threshold)

  def initial_state(self) -> ServerState:
    return ServerState([v.numpy() for v in self.body + self.head], [], [],
                       [])

  def _labels(self, client: Client, round_num: int
              ) -> Tuple[np.ndarray, np.ndarray]:
    """(labels, weights) of the client's images: its own labels (weight
    1) or what the method makes of a target client's unlabelled images."""
    x, y = self.data[client.domain]
    if client.domain == SOURCE or self.method.reads_target_labels:
      return y[client.indices], np.ones(len(client.indices), np.float32)
    return self.method.target_labels(
        client, round_num, lambda idx: predict_logits(
            self.models.model, x[idx], IDENTITY, self.eval_batch_size))

  def _train_client(self, client: Client, client_id: int, round_num: int,
                    lambda_: float, labels: np.ndarray,
                    weights: np.ndarray) -> np.ndarray:
    """Local epochs on one client (labels and weights aligned with its
    indices); returns [weighted class loss, domain loss, domain correct,
    examples, labelled examples] summed over its batches."""
    x = self.data[client.domain][0]
    rng = np.random.default_rng([self.config.seed, round_num, client_id])
    sums = np.zeros(5)
    batch = self.config.local_batch_size
    adversarial = 1.0 if self.method.adversarial else 0.0
    for _ in range(self.config.local_epochs):
      order = rng.permutation(len(client.indices))
      for start in range(0, len(order), batch):
        pos = order[start:start + batch]
        if self.method.consistency:
          # self.teacher holds the broadcast model (set in train_round).
          loss, taught = self.consistency_step(
              tf.constant(x[client.indices[pos]]), tf.constant(labels[pos]),
              tf.constant(rng.integers(2**31, size=2)), client.domain)
          sums += [float(loss) * float(taught), 0.0, 0.0, len(pos),
                   float(taught)]
          continue
        out = self.client_step(
            tf.constant(x[client.indices[pos]]), tf.constant(labels[pos]),
            tf.constant(weights[pos]), tf.constant(float(client.domain)),
            tf.constant(lambda_, tf.float32), tf.constant(adversarial))
        labelled = float(weights[pos].sum())
        sums += [float(out[0]) * labelled, float(out[1]) * len(pos),
                 float(out[2]), len(pos), labelled]
    return sums

  def train_round(self, state: ServerState, client_states: Dict,
                  round_num: int) -> Tuple[ServerState, Row]:
    del client_states  # Clients keep nothing between rounds.
    rng = np.random.default_rng([self.config.seed, round_num])
    sampled = np.sort(rng.choice(len(self.clients),
                                 self.config.clients_per_round,
                                 replace=False))
    lambda_ = self.method.round_lambda(round_num)
    # A variable of the compiled step: no retracing when it changes.
    client_lr = self.method.round_lr(round_num)
    self.client_optimizer.learning_rate = client_lr
    split = len(self.body)
    global_body, global_head = state.trainable[:split], state.trainable[split:]
    body_sum = [np.zeros_like(w) for w in global_body]
    head_sum = [np.zeros_like(w) for w in global_head]
    body_weight = head_weight = 0.0
    totals = np.zeros(5)
    trained = target_labelled = 0
    for client_id in sampled:
      client = self.clients[client_id]
      _assign(self.body, global_body)
      _assign(self.head, global_head)
      if self.method.consistency:
        self.teacher.set_weights(self.models.model.get_weights())
      labels, weights = self._labels(client, round_num)
      if not weights.any() and not self.method.adversarial:
        continue  # Nothing to learn from without labels or adaptation.
      sums = self._train_client(client, int(client_id), round_num, lambda_,
                                labels, weights)
      totals += sums
      trained += 1
      # Images that taught it per local epoch: its (pseudo-)labelled ones,
      # FixMatch's confident ones.
      labelled = sums[4] / self.config.local_epochs
      if client.domain == TARGET:
        # Self-training and FixMatch report them.
        target_labelled += int(round(labelled))
      n = self.method.body_weight(client, labelled)
      body_weight += n
      for acc, var, old in zip(body_sum, self.body, global_body):
        acc += n * (var.numpy() - old)
      if labelled:
        head_weight += labelled
        for acc, var, old in zip(head_sum, self.head, global_head):
          acc += labelled * (var.numpy() - old)
    if body_weight:
      global_body = [w + s / body_weight for w, s in zip(global_body,
                                                          body_sum)]
    if head_weight:
      global_head = [w + s / head_weight for w, s in zip(global_head,
                                                          head_sum)]
    row = {"lambda": lambda_, "client_lr": client_lr,
           "clients_trained": trained}
    if totals[4]:
      row["train_loss"] = totals[0] / totals[4]
    row.update(self.method.row(totals, target_labelled))
    weights_now = global_body + global_head
    if not all(math.isfinite(v) for v in row.values()) or not all(
        np.all(np.isfinite(w)) for w in weights_now):
      raise diverged(self.checkpointer, round_num,
                     f"federated {self.method.name}",
                     "lower --client_lr or --dann_weight")
    return ServerState(weights_now, [], [], [], round_num), row


class UdaEvaluator:
  """The global model's accuracy on the target's and the source's test
  sets (a learning curve only: nothing is selected on it)."""

  def __init__(self, rounds: UdaRounds, pair: DomainPair,
               normalizations: DomainNormalizations, batch_size: int):
    self.rounds = rounds
    self.pair = pair
    self.normalizations = normalizations
    self.batch_size = batch_size

  def load(self, state: ServerState) -> tf.keras.Model:
    """The global model with the state's weights."""
    _assign(self.rounds.body + self.rounds.head, state.trainable)
    return self.rounds.models.model

  def evaluate(self, state: ServerState, round_num: int) -> Row:
    del round_num  # Every round is scored alike.
    model = self.load(state)
    row = {}
    for name, ds, norm in (("test_accuracy", self.pair.target,
                            self.normalizations.target),
                           ("source_test_accuracy", self.pair.source,
                            self.normalizations.source)):
      row[name] = evaluate_classifier(
          model, (ds.x_test, ds.y_test), norm, self.pair.num_classes,
          batch_size=self.batch_size)["accuracy"]
    return row


def _client_data(pair: DomainPair, normalizations: DomainNormalizations,
                 reads_target_labels: bool):
  """Each domain's standardized training images and the labels its clients
  hold (none for the target, unless the method is the oracle)."""
  return {
      SOURCE: (normalizations.source.apply(pair.source.x_train)
               .astype(np.float32), pair.source.y_train.astype(np.int64)),
      TARGET: (normalizations.target.apply(pair.target.x_train)
               .astype(np.float32),
               pair.target.y_train.astype(np.int64)
               if reads_target_labels else
               # Never passed on: the clients do not have them.
               np.zeros(len(pair.target.y_train), np.int64)),
  }


def federated_uda_loop(pair: DomainPair, task: AdaptationTask, method: str,
                       config: FederatedAdaptConfig, recorder: RunRecorder,
                       out_dir: str) -> Tuple[RoundLoop, UdaEvaluator]:
  """The round loop of a federated adaptation run and its evaluator (which
  also loads a state's weights into the global model)."""
  if method not in FEDERATED_UDA_METHODS:
    raise UserError(f"federated adaptation runs {', '.join(FEDERATED_METHODS)}"
                    f"; got {method!r}")
  config.validate()
  # Every method trains DANN's model (only dann's loss reads the domain
  # classifier), so the params are DANN's whatever the method.
  dann_params: DannParams = task.method_params("dann")
  uda = FEDERATED_UDA_METHODS[method](config, dann_params)
  normalizations = task.normalizations()
  data = _client_data(pair, normalizations, uda.reads_target_labels)
  # The labels shape a label-skewed split only (see FederatedAdaptConfig).
  clients = split_clients(len(data[SOURCE][1]), len(data[TARGET][1]), config,
                          (pair.source.y_train, pair.target.y_train))
  checkpointer = Checkpointer(os.path.join(out_dir, "checkpoints"),
                              setting=task.setting)
  eval_batch_size = task.config.train.eval_batch_size
  rounds = UdaRounds(uda, config, data, clients,
                     build_dann_models(task, dann_params), eval_batch_size,
                     checkpointer, normalizations)
  evaluator = UdaEvaluator(rounds, pair, normalizations, eval_batch_size)
  loop = RoundLoop(
      RoundLoopConfig(rounds=config.rounds, eval_every=config.eval_every,
                      checkpoint_every=config.checkpoint_every,
                      log_name=f"federated {method} round"),
      rounds, evaluator, recorder, checkpointer,
      f"federated_uda/{method}/{pair.source.name}->{pair.target.name}",
      out_dir)
  return loop, evaluator


def run_federated_uda(config: AdaptRunConfig,
                       federated: FederatedAdaptConfig, out_dir: str,
                       run_config: Dict, resume: bool = False) -> Dict:
  """A federated adaptation run with the usual results files.

  Args:
    config: the domains, model, `method` (one of `FEDERATED_METHODS`),
      `adapt.normalization` and `adapt.params`: DANN's (`DannParams`, None
      for its defaults) whatever the method, since every method trains
      DANN's model (`adapt.train` is not read: the federation's training
      settings are in `federated`).
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
  # ADAPTATION_METHODS), with the params as DANN's (see above).
  as_dann = dataclasses.replace(config, method="dann")
  as_dann.validate()
  config = dataclasses.replace(as_dann.with_resolved_params(),
                               method=config.method)
  federated.validate()
  pair = config.load_pair()
  recorder = RunRecorder(out_dir, {"flags": run_config, "resolved": config,
                                   "federated": federated,
                                   "domains": pair.describe()}, resume=resume)
  start_run_log(recorder, run_config)
  task = AdaptationTask(pair, config.model_name, config.model, config.adapt,
                        setting=run_setting(run_config))
  loop, evaluator = federated_uda_loop(pair, task, config.method, federated,
                                       recorder, out_dir)
  details = {"federated": dataclasses.asdict(federated),
             "client_sizes": [int(len(c.indices))
                              for c in loop.runner.clients]}
  if config.method == "dann":
    details["dann"] = dataclasses.asdict(config.adapt.params)

  def on_divergence(progress: Dict) -> None:
    recorder.write_summary({"method": config.method, **details,
                            "rounds_run": progress["rounds_run"],
                            "diverged_at_round": progress["diverged_at_round"],
                            "divergence": progress["divergence"]})

  result = loop.run(resume, on_divergence)
  details.update({key: result.progress[key]
                  for key in ("rounds_run", "train_seconds")})
  rows = recorder.read_metrics()
  if config.method == "dann" and rows and "domain_accuracy" in rows[-1]:
    details["final_domain_accuracy"] = rows[-1]["domain_accuracy"]
  model = evaluator.load(result.state)
  normalizations = evaluator.normalizations
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
