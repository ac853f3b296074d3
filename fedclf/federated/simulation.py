"""The federated simulation loop (what `simulations.federated` runs).

One loop for every algorithm and backend: plan the round (sampling, dropout,
stragglers), let the backend train the reporting clients and update the
server, evaluate, record, checkpoint. A killed run resumed from its last
checkpoint ends with the same weights as an uninterrupted one, because every
random choice of round r derives from (seed, r).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Dict, List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from fedclf.data import DataConfig
from fedclf.data import ImageDataset
from fedclf.data import load_dataset
from fedclf.data.preprocess import check_input_scaling
from fedclf.data.preprocess import Normalization
from fedclf.errors import DivergenceError
from fedclf.errors import is_interrupt
from fedclf.errors import UserError
from fedclf.metrics.splits import holdout_split
from fedclf.federated.algorithms import Algorithm
from fedclf.federated.algorithms import build_algorithm
from fedclf.federated.config import SimulationConfig
from fedclf.federated import rounds as rounds_lib
from fedclf.federated.local_backend import LocalBackend
from fedclf.federated.ssl_objective import build_ssl_trainable
from fedclf.federated.ssl_objective import ssl_objective
from fedclf.models import build_classifier
from fedclf.models import count_params
from fedclf.models import ModelConfig
from fedclf.partition import partition
from fedclf.partition import label_histogram
from fedclf.partition import partition_summary
from fedclf.partition import PartitionConfig
from fedclf.partition import plot_histogram
from fedclf.registry import MODELS
from fedclf.registry import SSL_METHODS
from fedclf.results import RunRecorder
from fedclf.results.record import atomic_write_json
from fedclf.ssl.augment import default_for
from fedclf.ssl.core import SslConfig
from fedclf.ssl.evaluate import knn_accuracy
from fedclf.ssl.evaluate import linear_probe
from fedclf.train.loop import evaluate_classifier
from fedclf.train.loop import predict_logits


@dataclasses.dataclass(frozen=True)
class FederatedRunConfig:
  data: DataConfig
  partitioner: str = "iid"
  partition: PartitionConfig = PartitionConfig(num_clients=100)
  model_name: str = "cnn"
  model: ModelConfig = ModelConfig()
  simulation: SimulationConfig = SimulationConfig()
  eval_batch_size: int = 1000
  centralized_epochs: int = 0  # >0: train the same model centrally too
  # "supervised", or an SSL method (simclr, simsiam, barlow_twins): clients
  # then pretrain an encoder without labels (see ssl_objective.py).
  objective: str = "supervised"
  ssl: SslConfig = SslConfig()
  knn_train_examples: int = 10000  # SSL: labelled references for kNN
  # Share of the training set held out (stratified, seeded) before
  # partitioning; the global model is scored on it at every evaluation so
  # hyper-parameters can be chosen without looking at the test set.
  val_fraction: float = 0.0
  input_scaling: str = "standardize"  # or "unit": pixels in [0, 1]

  def validate(self) -> None:
    MODELS.get(self.model_name)
    check_input_scaling(self.input_scaling)
    self.simulation.validate()
    if self.partition.num_clients != self.simulation.num_clients:
      raise UserError("partition and simulation disagree on num_clients")
    if self.eval_batch_size < 1 or self.centralized_epochs < 0:
      raise UserError("eval_batch_size must be >= 1, centralized_epochs >= 0")
    if not 0.0 <= self.val_fraction < 1.0:
      raise UserError(f"val_fraction must be in [0, 1), got "
                      f"{self.val_fraction}")
    if self.objective != "supervised":
      SSL_METHODS.get(self.objective)  # unknown: the error lists the names
      if self.ssl.method != self.objective:
        raise UserError("ssl.method must equal the objective")
      if self.centralized_epochs:
        raise UserError("--centralized_epochs compares supervised training; "
                        "run simulations.ssl_pretrain for centralized SSL")


# Marks the logged training row of a round whose evaluation Ctrl-C cut short.
_EVALUATION_INTERRUPTED = "evaluation_interrupted"


def _write_scalars(tb, round_num: int, row: Dict[str, float]) -> None:
  with tb.as_default(step=round_num):
    for key, value in row.items():
      tf.summary.scalar(key, value)


def _percentiles(values: List[float]) -> Dict[str, float]:
  if not values:
    return {}
  v = np.asarray(values)
  return {"mean": float(v.mean()), "p10": float(np.percentile(v, 10)),
          "p50": float(np.percentile(v, 50)),
          "p90": float(np.percentile(v, 90)), "min": float(v.min())}


def _all_finite(arrays) -> bool:
  return all(np.all(np.isfinite(a)) for a in arrays)


def _load_state(model: tf.keras.Model, state: rounds_lib.ServerState) -> None:
  """Assigns the server state's weights in the order the backends read them
  (trainable_variables, then non_trainable_variables)."""
  for var, value in zip(model.trainable_variables, state.trainable):
    var.assign(value)
  for var, value in zip(model.non_trainable_variables, state.non_trainable):
    var.assign(value)


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


def _hold_out_validation(ds: ImageDataset, fraction: float, seed: int
                         ) -> Tuple[ImageDataset, Optional[Tuple]]:
  """Splits a stratified validation set off the training images; the
  clients are then partitioned from the rest only."""
  if fraction <= 0:
    return ds, None
  train_idx, val_idx = holdout_split(len(ds.y_train), fraction, seed,
                                     ds.y_train)
  ids = ds.train_client_ids
  kept = dataclasses.replace(
      ds, x_train=ds.x_train[train_idx], y_train=ds.y_train[train_idx],
      train_client_ids=None if ids is None else ids[train_idx])
  return kept, (ds.x_train[val_idx], ds.y_train[val_idx])


class Simulation:
  """One federated run: data, clients, backend, results files."""

  def __init__(self, config: FederatedRunConfig, out_dir: str,
               run_config: Dict, resume: bool = False):
    config.validate()
    self.config = config
    self.sim = config.simulation
    self.out_dir = out_dir
    self.resume = resume
    self.algorithm: Algorithm = build_algorithm(self.sim.algorithm,
                                                self.sim.algorithm_config,
                                                self.sim.algorithm_params)
    self.ds, self.validation = _hold_out_validation(
        load_dataset(config.data), config.val_fraction,
        config.simulation.seed)
    logging.info("dataset %s", self.ds.describe())
    self.clients = partition(config.partitioner, self.ds.y_train,
                             config.partition, self.ds.train_client_ids)
    self.normalization = Normalization.for_scaling(config.input_scaling,
                                                   self.ds.x_train)
    self.is_ssl = config.objective != "supervised"
    self.client_accuracies: Optional[Dict] = None
    if self.is_ssl:
      # SSL augments in pixel space and normalizes the views itself.
      self.x_train = self.ds.x_train.astype(np.float32)
      self.algorithm = dataclasses.replace(
          self.algorithm,
          client_work=self.algorithm.client_work.with_objective(
              ssl_objective(default_for(self.ds.name,
                                        self.ds.input_shape[-1]),
                            self.normalization)))
    else:
      self.x_train = self.normalization.apply(self.ds.x_train).astype(
          np.float32)
    self.recorder = RunRecorder(out_dir, {
        "flags": run_config, "resolved": config,
        "dataset": self.ds.describe()}, resume=resume)
    self.checkpointer = rounds_lib.Checkpointer(
        os.path.join(out_dir, "checkpoints"))
    self.tag = (f"{self.algorithm.name}/{config.model_name}/"
                f"{self.ds.name}/{self.sim.backend}/{self.sim.num_clients}/"
                f"{config.objective}")
    self._write_partition_report()
    self.batch_shape = self._batch_shape()
    self.backend = self._make_backend()
    # Built after the backend: the tff backend traces Keras models in TF1
    # graphs, which invalidates Keras models made before it.
    self.eval_model = self._build_model()

  # -- setup --------------------------------------------------------------
  def _build_model(self) -> tf.keras.Model:
    if self.is_ssl:
      return build_ssl_trainable(self.config.model_name, self.ds.input_shape,
                                 self.ds.num_classes, self.config.model,
                                 self.config.ssl)
    return build_classifier(self.config.model_name, self.ds.input_shape,
                            self.ds.num_classes, self.config.model)

  def _local_batch_size(self) -> int:
    return 0 if self.algorithm.full_batch else (
        self.sim.algorithm_config.local_batch_size)

  def _local_epochs(self) -> int:
    return 1 if self.algorithm.single_epoch else (
        self.sim.algorithm_config.local_epochs)

  def _batch_shape(self):
    batch = self._local_batch_size()
    largest = max(len(c) for c in self.clients)
    steps = rounds_lib.local_steps(largest, self._local_epochs(), batch)
    if self.sim.max_local_steps:
      steps = min(steps, self.sim.max_local_steps)
    return (steps, largest if batch == 0 else batch)

  def _make_backend(self):
    parallel = self.sim.parallel_clients or max(2, os.cpu_count() or 1)
    parallel = min(parallel, self.sim.clients_per_round)
    if self.sim.backend == "local":
      return LocalBackend(self.algorithm, self._build_model, self.x_train,
                          self.ds.y_train, parallel, self.batch_shape,
                          self.sim.clients_per_round, self.sim.num_clients,
                          self.sim.seed)
    aggregator = self.algorithm.aggregator
    if not aggregator.has_tff_form:
      raise UserError(
          f"algorithm {self.algorithm.name!r} aggregates with "
          f"{aggregator.name!r}, which has no TFF form; use --backend=local")
    # Imported here: importing TFF takes ~50 s, which `local` runs skip.
    from fedclf.federated.tff_backend import TffBackend  # pylint: disable=g-import-not-at-top
    return TffBackend(self.algorithm, self._build_model, self.x_train,
                      self.ds.y_train, self.batch_shape,
                      self.sim.clients_per_round, self.sim.num_clients,
                      self.sim.seed, self.sim.tff_workers)

  def _write_partition_report(self) -> None:
    hist = label_histogram(self.ds.y_train, self.clients, self.ds.num_classes)
    atomic_write_json(os.path.join(self.out_dir, "partition.json"),
                      {"summary": partition_summary(hist),
                       "client_sizes": [len(c) for c in self.clients]})
    plot_histogram(hist, os.path.join(self.out_dir, "partition.png"),
                   f"{self.config.partitioner}: {len(self.clients)} clients")
    logging.info("partition %s", partition_summary(hist))

  # -- one round ------------------------------------------------------------
  def _tasks(self, plan: rounds_lib.RoundPlan, round_num: int):
    tasks = []
    for cid in plan.reporting:
      cid = int(cid)
      rng = rounds_lib.round_rng(self.sim.seed, round_num, 1000 + cid)
      cap = self.sim.max_local_steps
      if cid in plan.step_fraction:
        full = rounds_lib.local_steps(len(self.clients[cid]),
                                      self._local_epochs(),
                                      self._local_batch_size())
        budget = max(1, int(full * plan.step_fraction[cid]))
        cap = min(cap, budget) if cap else budget
      matrix, steps = rounds_lib.client_batches(
          self.clients[cid], self._local_epochs(), self._local_batch_size(),
          rng, cap, self.batch_shape)
      tasks.append((cid, matrix, steps, len(self.clients[cid]),
                    rounds_lib.client_seed(self.sim.seed, round_num, cid)))
    return tasks

  def _knn_references(self):
    """A seeded labelled subset of the training set for kNN evaluation."""
    n = len(self.ds.y_train)
    keep = np.sort(np.random.default_rng(self.sim.seed).permutation(n)[
        :min(n, self.config.knn_train_examples)])
    return self.ds.x_train[keep], self.ds.y_train[keep]

  def _evaluate_ssl(self, state) -> Dict[str, float]:
    _load_state(self.eval_model, state)
    accuracy = knn_accuracy(self.eval_model.encoder, self._knn_references(),
                            (self.ds.x_test, self.ds.y_test),
                            self.normalization)
    # "test_accuracy" is the kNN accuracy of the frozen features here.
    return {"test_accuracy": accuracy, "knn_accuracy": accuracy}

  def evaluate(self, state: rounds_lib.ServerState,
               round_num: int) -> Dict[str, float]:
    if self.is_ssl:
      return self._evaluate_ssl(state)
    _load_state(self.eval_model, state)
    report = evaluate_classifier(self.eval_model,
                                 (self.ds.x_test, self.ds.y_test),
                                 self.normalization, self.ds.num_classes,
                                 batch_size=self.config.eval_batch_size)
    metrics = {"test_accuracy": report["accuracy"],
               "test_macro_f1": report["macro_f1"],
               "test_loss": report["loss"]}
    if self.validation is not None:
      val = evaluate_classifier(self.eval_model, self.validation,
                                self.normalization, self.ds.num_classes,
                                batch_size=self.config.eval_batch_size)
      metrics.update({"val_accuracy": val["accuracy"],
                      "val_loss": val["loss"]})
    if self.sim.per_client_eval:
      rng = rounds_lib.round_rng(self.sim.seed, round_num, 99)
      chosen = np.sort(rng.choice(len(self.clients), size=min(
          self.sim.per_client_eval, len(self.clients)), replace=False))
      accs = []
      for cid in chosen:
        idx = self.clients[cid]
        logits = predict_logits(self.eval_model, self.ds.x_train[idx],
                                self.normalization,
                                self.config.eval_batch_size)
        accs.append(float(np.mean(logits.argmax(-1) == self.ds.y_train[idx])))
      metrics.update({f"client_accuracy_{k}": v
                      for k, v in _percentiles(accs).items()})
      # The last evaluation's per-client values are kept for the
      # distribution plot (client_accuracy.json at the end of the run).
      self.client_accuracies = {"round": round_num,
                                "clients": [int(c) for c in chosen],
                                "accuracy": accs}
      if self.algorithm.personalization_steps:
        metrics.update(self._personalized(state, chosen, round_num))
    return metrics

  def _personalized(self, state, chosen, round_num) -> Dict[str, float]:
    """Fine-tunes the global model on 80% of each chosen client's data for
    `personalization_steps` SGD steps and scores it on the other 20%."""
    alg = self.algorithm
    batch = self.sim.algorithm_config.local_batch_size or 32
    step = _fine_tune_step(self.eval_model, alg.personalization_lr)
    before, after = [], []
    for cid in chosen:
      idx = rounds_lib.round_rng(self.sim.seed, 0, 5000 + int(cid)).permutation(
          self.clients[cid])
      cut = max(1, int(0.8 * len(idx)))
      support, query = idx[:cut], idx[cut:]
      if len(query) == 0:
        continue
      _load_state(self.eval_model, state)
      x_query = self.ds.x_train[query]
      before.append(float(np.mean(predict_logits(
          self.eval_model, x_query, self.normalization).argmax(-1) ==
                                  self.ds.y_train[query])))
      rng = rounds_lib.round_rng(self.sim.seed, round_num, 6000 + int(cid))
      for _ in range(alg.personalization_steps):
        pick = rng.choice(support, size=min(batch, len(support)),
                          replace=False)
        step(tf.constant(self.x_train[pick]),
             tf.constant(self.ds.y_train[pick].astype(np.int64)))
      after.append(float(np.mean(predict_logits(
          self.eval_model, x_query, self.normalization).argmax(-1) ==
                                 self.ds.y_train[query])))
    _load_state(self.eval_model, state)
    return {"personal_query_accuracy_before": float(np.mean(before)),
            "personal_query_accuracy_after": float(np.mean(after))}

  # -- the loop -------------------------------------------------------------
  def train_round(self, state: rounds_lib.ServerState,
                  client_states: Dict[int, List[np.ndarray]],
                  round_num: int):
    """Plans round `round_num`, trains its reporting clients and updates
    the server; updates `client_states` in place. Returns (state, row)."""
    sim = self.sim
    plan = rounds_lib.plan_round(sim.seed, round_num, sim.num_clients,
                                 sim.clients_per_round, sim.client_dropout,
                                 sim.straggler_fraction)
    tasks = self._tasks(plan, round_num)
    row: Dict[str, float] = {
        "clients_sampled": len(plan.sampled),
        "clients_reported": len(plan.reporting),
        "stragglers": len(plan.step_fraction)}
    if not tasks:
      logging.warning("round %d: no sampled client reported; the model is "
                      "unchanged", round_num)
      return dataclasses.replace(state, round_num=round_num), row
    new_state, outputs = self.backend.run_round(state, tasks, client_states,
                                                round_num)
    finite = [o for o in outputs if not float(o.dropped)]
    # Dropped clients: those whose training raised (the backend logged why)
    # and those whose update became NaN/Inf.
    row["clients_failed"] = int(sum(float(o.failed) for o in outputs))
    row["clients_nonfinite"] = (len(outputs) - len(finite) -
                                row["clients_failed"])
    if row["clients_nonfinite"]:
      logging.warning("round %d: %d client(s) produced NaN/Inf and were "
                      "dropped", round_num, row["clients_nonfinite"])
    if row["clients_failed"] == len(outputs):
      raise RuntimeError(f"round {round_num}: the local training of every "
                         f"client raised (see the log)")
    if not finite:
      self._diverged(round_num, "every client's training became NaN/Inf")
    loss_sum = float(sum(float(o.loss_sum) for o in finite))
    seen = float(sum(float(o.examples) for o in finite))
    row["train_loss"] = loss_sum / max(seen, 1.0)
    row["train_accuracy"] = float(
        sum(float(o.correct) for o in finite)) / max(seen, 1.0)
    row["examples"] = seen
    if not math.isfinite(row["train_loss"]):
      self._diverged(round_num, f"client loss {row['train_loss']}")
    if sim.max_train_loss and row["train_loss"] > sim.max_train_loss:
      self._diverged(round_num, f"client loss {row['train_loss']:.4g} is "
                     f"above --max_train_loss={sim.max_train_loss:g}")
    if not _all_finite(new_state.model_weights()):
      self._diverged(round_num, "non-finite global weights")
    if self.algorithm.client_work.stateful:
      for (cid, *_), out in zip(tasks, outputs):
        client_states[cid] = [np.asarray(t) for t in out.client_state]
    return new_state, row

  def run(self) -> Dict:
    sim = self.sim
    state = self.backend.initial_state(self.eval_model)
    client_states: Dict[int, List[np.ndarray]] = {}
    template = state
    if self.resume and self.checkpointer.latest():
      path = self.checkpointer.latest()
      state, client_states = self.checkpointer.restore(path, template,
                                                       self.tag)
      logging.info("resumed from %s (round %d)", path, state.round_num)
    tb = tf.summary.create_file_writer(os.path.join(self.out_dir, "tb"))
    if self.resume:
      # Rounds logged after the checkpoint (all of them if there is none)
      # are replayed.
      self.recorder.drop_metrics_after(state.round_num, "round")
      self._finish_interrupted_evaluation(state, tb)
    summary: Dict = {"algorithm": self.algorithm.name,
                     "backend": sim.backend,
                     "model": self.config.model_name,
                     "parameters": count_params(self.eval_model),
                     "dataset": self.ds.describe(),
                     "partitioner": self.config.partitioner,
                     # Exporters apply the same input normalization.
                     "normalization": dataclasses.asdict(self.normalization),
                     "num_clients": sim.num_clients,
                     "clients_per_round": sim.clients_per_round}
    history = self.recorder.read_metrics()
    reached = next((r["round"] for r in history
                    if sim.target_accuracy and
                    r.get("test_accuracy", 0) >= sim.target_accuracy), None)
    train_seconds = sum(r.get("round_seconds", 0.0) for r in history)
    examples = sum(r.get("examples", 0.0) for r in history)
    last_eval: Dict[str, float] = {}
    # The row of a round that has trained but is not logged yet: Ctrl-C
    # during its evaluation must not lose it (see the interrupt handler).
    unlogged_row: Optional[Dict] = None

    def progress() -> Dict:
      # What the run got through, for a finished and a diverged summary.
      return {"rounds_run": state.round_num,
              "target_accuracy": sim.target_accuracy or None,
              "rounds_to_target": reached,
              "train_seconds": round(train_seconds, 3),
              "client_examples_per_second": round(
                  examples / max(train_seconds, 1e-9), 1)}

    # A run resumed after it stopped at its target does not train on.
    last_round = (state.round_num if sim.stop_at_target and reached is not None
                  else sim.rounds)
    try:
      for round_num in range(state.round_num + 1, last_round + 1):
        t0 = time.time()
        state, row = self.train_round(state, client_states, round_num)
        row["round_seconds"] = time.time() - t0
        unlogged_row = row
        train_seconds += row["round_seconds"]
        examples += row.get("examples", 0.0)
        if self._evaluates(round_num):
          last_eval = self.evaluate(state, round_num)
          row.update(last_eval)
          if (reached is None and sim.target_accuracy and
              last_eval["test_accuracy"] >= sim.target_accuracy):
            reached = round_num
        self.recorder.log_metrics(round_num, row, "round")
        unlogged_row = None
        _write_scalars(tb, round_num, row)
        logging.info(
            "round %d/%d  clients %d/%d  loss %.4f%s  %.1fs", round_num,
            sim.rounds, row["clients_reported"], row["clients_sampled"],
            row.get("train_loss", float("nan")),
            f"  test_acc {last_eval['test_accuracy']:.4f}" if "test_accuracy"
            in row else "", row["round_seconds"])
        stop = sim.stop_at_target and reached is not None
        if sim.checkpoint_every and (round_num % sim.checkpoint_every == 0 or
                                     round_num == sim.rounds or stop):
          self.checkpointer.save(state, client_states, self.tag)
        if stop:
          logging.info("target accuracy %.4f reached at round %d",
                       sim.target_accuracy, reached)
          break
    except DivergenceError as e:
      # A diverged grid point is a result, not a crash: its summary says
      # so, tables show it and a rerun grid does not repeat it; the run
      # still stops with the error (and keeps its last good checkpoint).
      summary.update(progress())
      summary.update({"diverged_at_round": state.round_num + 1,
                      "divergence": str(e)})
      self.recorder.write_summary(summary)
      raise
    except (KeyboardInterrupt, RuntimeError) as e:
      if not is_interrupt(e):
        raise
      # Ctrl-C: keep the last completed round so --resume continues there.
      if unlogged_row is not None:
        # It trained but its evaluation was cut short: its training row is
        # logged, flagged, to match the checkpoint below, and --resume
        # evaluates the restored weights before going on.
        unlogged_row[_EVALUATION_INTERRUPTED] = 1
        self.recorder.log_metrics(state.round_num, unlogged_row, "round")
      if sim.checkpoint_every and state.round_num:
        path = self.checkpointer.save(state, client_states, self.tag)
        logging.warning("interrupted; saved %s (round %d)", path,
                        state.round_num)
      raise KeyboardInterrupt from None
    tb.flush()
    if not last_eval:
      last_eval = self.evaluate(state, state.round_num)
    summary.update({f"final_{k}": v for k, v in last_eval.items()})
    if self.client_accuracies is not None:
      atomic_write_json(os.path.join(self.out_dir, "client_accuracy.json"),
                        self.client_accuracies)
    val_history = [r["val_accuracy"] for r in self.recorder.read_metrics()
                   if "val_accuracy" in r]
    if val_history:
      summary["best_val_accuracy"] = max(val_history)
      summary["validation_examples"] = int(len(self.validation[1]))
    summary.update(progress())
    if self.is_ssl:
      _load_state(self.eval_model, state)
      probe = linear_probe(self.eval_model.encoder,
                           (self.ds.x_train, self.ds.y_train),
                           (self.ds.x_test, self.ds.y_test),
                           self.normalization, self.ds.num_classes)
      summary.update({"objective": self.config.objective,
                      "evaluation": "knn during training, linear probe at "
                                    "the end",
                      "linear_probe_accuracy": probe["accuracy"],
                      "linear_probe_macro_f1": probe["macro_f1"]})
      logging.info("linear probe test accuracy %.4f", probe["accuracy"])
    runtime = getattr(self.backend, "runtime", None)
    if runtime is not None:
      summary["tff_worker_pids"] = list(runtime.owned_pids)
      summary["tff_workers"] = runtime.num_workers
    if self.algorithm.aggregator.differentially_private:
      summary["dp"] = dp_epsilon(self.algorithm.aggregator.noise_multiplier,
                                 sim.clients_per_round / sim.num_clients,
                                 state.round_num, sim.num_clients)
    self.recorder.write_summary(summary)
    self.final_state = state
    return summary

  def _evaluates(self, round_num: int) -> bool:
    """Whether the global model is evaluated after `round_num`."""
    return round_num % self.sim.eval_every == 0 or round_num == self.sim.rounds

  def _finish_interrupted_evaluation(self, state: rounds_lib.ServerState,
                                     tb) -> None:
    """Evaluates a restored round whose evaluation Ctrl-C cut short."""
    rows = self.recorder.read_metrics()
    if not rows or not rows[-1].get(_EVALUATION_INTERRUPTED):
      return
    row = {k: v for k, v in rows[-1].items()
           if k not in ("round", "wall_seconds", _EVALUATION_INTERRUPTED)}
    if self._evaluates(state.round_num):
      row.update(self.evaluate(state, state.round_num))
    self.recorder.drop_metrics_after(state.round_num - 1, "round")
    self.recorder.log_metrics(state.round_num, row, "round")
    _write_scalars(tb, state.round_num, row)
    logging.info("round %d: evaluated after resume", state.round_num)

  def _diverged(self, round_num: int, what: str) -> None:
    latest = self.checkpointer.latest()
    kept = f"; last good checkpoint: {latest}" if latest else ""
    raise DivergenceError(
        f"training diverged at round {round_num} ({what}); lower "
        f"--client_lr or --server_lr{kept}")

  def close(self) -> None:
    close = getattr(self.backend, "close", None)
    if close:
      close()


def dp_epsilon(noise_multiplier: float, sampling_rate: float, rounds: int,
               num_clients: int) -> Dict[str, float]:
  """User-level (epsilon, delta) of DP-FedAvg by RDP accounting of the
  Poisson-subsampled Gaussian mechanism, delta = 1/num_clients^1.1."""
  import dp_accounting  # pylint: disable=g-import-not-at-top
  from dp_accounting import rdp  # pylint: disable=g-import-not-at-top
  delta = 1.0 / (num_clients ** 1.1)
  if noise_multiplier <= 0:
    return {"epsilon": float("inf"), "delta": delta}
  accountant = rdp.RdpAccountant()
  accountant.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)),
      rounds))
  return {"epsilon": float(accountant.get_epsilon(delta)), "delta": delta,
          "noise_multiplier": noise_multiplier, "sampling_rate": sampling_rate,
          "rounds": rounds}


def run_federated(config: FederatedRunConfig, out_dir: str, run_config: Dict,
                  resume: bool = False) -> Dict:
  """Runs the simulation (and, if asked, the centralized comparison on the
  same model and training data, into out_dir/centralized)."""
  simulation = Simulation(config, out_dir, run_config, resume)
  try:
    summary = simulation.run()
  finally:
    simulation.close()
  if config.centralized_epochs:
    from fedclf.train.centralized import CentralizedConfig, run_centralized  # pylint: disable=g-import-not-at-top
    from fedclf.train.loop import TrainConfig  # pylint: disable=g-import-not-at-top
    from fedclf.train.optimizers import OptimizerConfig  # pylint: disable=g-import-not-at-top
    alg = config.simulation.algorithm_config
    central = CentralizedConfig(
        data=config.data, model_name=config.model_name, model=config.model,
        train=TrainConfig(
            epochs=config.centralized_epochs,
            batch_size=alg.local_batch_size or 32,
            optimizer=OptimizerConfig(
                name="sgd" if alg.client_optimizer == "sgd" else "momentum",
                learning_rate=alg.client_lr, momentum=alg.client_momentum,
                # Keras decays decoupled from momentum, the clients coupled;
                # the same update without momentum.
                weight_decay=alg.client_weight_decay),
            seed=config.simulation.seed),
        val_fraction=0.0, input_scaling=config.input_scaling)
    central_summary = run_centralized(central,
                                      os.path.join(out_dir, "centralized"),
                                      {"from": "federated comparison"},
                                      resume=resume)
    summary["centralized_test_accuracy"] = central_summary["test_accuracy"]
    summary["centralized_epochs"] = config.centralized_epochs
    simulation.recorder.write_summary(summary)
  return summary
