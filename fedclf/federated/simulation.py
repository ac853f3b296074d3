"""A federated simulation (what `simulations.federated` runs), composed.

`Simulation` sets a run up and hands it to the one round loop
(`round_loop.RoundLoop`): the dataset split into clients (with an optional
validation hold-out and the partition report), the `Objective` (supervised
or self-supervised: the model, the clients' loss and the evaluator), the
algorithm (a registered plugin) run on a backend by `BackendRounds`, and at
the end the summary (final metrics, DP accounting, the centralized
comparison of `run_federated`). A killed run resumed from its last
checkpoint ends with the same weights as an uninterrupted one, because
every random choice of round r derives from (seed, r).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from fedclf.data import DataConfig
from fedclf.data import ImageDataset
from fedclf.data import load_dataset
from fedclf.data.preprocess import check_input_scaling
from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.federated import rounds as rounds_lib
from fedclf.federated.algorithms import Algorithm
from fedclf.federated.algorithms import build_algorithm
from fedclf.federated.attack_config import write_malicious_clients
from fedclf.federated.aggregation import with_aggregator
from fedclf.federated.backend_rounds import batch_shape
from fedclf.federated.backend_rounds import BackendRounds
from fedclf.federated.byol_target import with_target_network
from fedclf.federated.client_labels import labelled_clients
from fedclf.federated.compression import with_compression
from fedclf.federated.config import SimulationConfig
from fedclf.federated.backends import Backend
from fedclf.federated.backends import BACKENDS
from fedclf.federated.backends import BackendSpec
from fedclf.federated.evaluation import load_state
from fedclf.federated.evaluation import Personalization
from fedclf.federated.objectives import EvaluationSettings
from fedclf.federated.objectives import FederatedData
from fedclf.federated.objectives import Objective
from fedclf.federated.objectives import SelfSupervisedObjective
from fedclf.federated.objectives import SupervisedObjective
from fedclf.federated.personal import bind_to_model
from fedclf.federated.personal import split_clients
from fedclf.federated.round_loop import RoundLoop
from fedclf.federated.round_loop import RoundLoopConfig
from fedclf.metrics.splits import holdout_split
from fedclf.models import count_params
from fedclf.models import ModelConfig
from fedclf.models.pretrained import check_encoder_init
from fedclf.models.pretrained import check_source_fits
from fedclf.models.pretrained import EncoderInit
from fedclf.models.pretrained import encoder_feature_statistics
from fedclf.models.pretrained import FeatureStatistics
from fedclf.models.pretrained import load_source_encoder
from fedclf.models.pretrained import read_source_encoder
from fedclf.models.pretrained import source_record
from fedclf.models.pretrained import standardize_head_features
from fedclf.partition import label_histogram
from fedclf.partition import partition
from fedclf.partition import partition_summary
from fedclf.partition import PartitionConfig
from fedclf.partition import plot_histogram
from fedclf.plugin_config import resolve_params
from fedclf.registry import MODELS
from fedclf.registry import SSL_METHODS
from fedclf.results import RunRecorder
from fedclf.results.run_folder import run_setting
from fedclf.results.record import atomic_write_json
from fedclf.results.tensorboard_log import start_run_log
from fedclf.results.trained_run import write_final_model
from fedclf.ssl.method import SslConfig
from fedclf.train.centralized import check_label_fraction


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
  # "supervised", or an SSL method (simclr, simsiam, barlow_twins,
  # vicreg, byol): clients then pretrain an encoder without labels (see
  # ssl_objective.py).
  objective: str = "supervised"
  ssl: SslConfig = SslConfig()
  knn_train_examples: int = 10000  # SSL: labelled references for kNN
  # Share of the training set held out (stratified, seeded) before
  # partitioning; the global model is scored on it at every evaluation so
  # hyper-parameters can be chosen without looking at the test set.
  val_fraction: float = 0.0
  # Share of each client's training examples that carry labels (seeded per
  # client); supervised clients train on those only, and the centralized
  # comparison on the same examples. SSL objectives read no labels.
  label_fraction: float = 1.0
  input_scaling: str = "standardize"  # or "unit": pixels in [0, 1]
  # Supervised: the global model's encoder starts from a finished run's;
  # frozen, it is neither trained nor aggregated (not a trainable variable).
  encoder_init: EncoderInit = EncoderInit()

  def validate(self) -> None:
    MODELS.get(self.model_name)
    check_encoder_init(self.encoder_init, self.model)
    if self.encoder_init.run_dir and self.objective != "supervised":
      raise UserError("--init_encoder starts a supervised model; it does not "
                      f"apply to --objective={self.objective}")
    check_input_scaling(self.input_scaling)
    self.simulation.validate()
    if self.partition.num_clients != self.simulation.num_clients:
      raise UserError("partition and simulation disagree on num_clients")
    if self.eval_batch_size < 1 or self.centralized_epochs < 0:
      raise UserError("eval_batch_size must be >= 1, centralized_epochs >= 0")
    if not 0.0 <= self.val_fraction < 1.0:
      raise UserError(f"val_fraction must be in [0, 1), got "
                      f"{self.val_fraction}")
    check_label_fraction(self.label_fraction)
    if self.objective != "supervised":
      if self.label_fraction < 1.0:
        raise UserError(f"--label_fraction limits supervised training; "
                        f"--objective={self.objective} reads no labels")
      SSL_METHODS.get(self.objective)  # unknown: the error lists the names
      if self.ssl.method != self.objective:
        raise UserError("ssl.method must equal the objective")
      params = resolve_params(SSL_METHODS, self.objective, self.ssl.params)
      refusal = getattr(params, "federated_refusal", lambda: None)()
      if refusal is not None:
        raise UserError(refusal)
      if self.centralized_epochs:
        raise UserError("--centralized_epochs compares supervised training; "
                        "run simulations.ssl_pretrain for centralized SSL")


def _hold_out_validation(ds: ImageDataset, fraction: float, seed: int
                         ) -> Tuple[ImageDataset, Optional[Tuple],
                                    np.ndarray]:
  """Splits a stratified validation set off the training images; the
  clients are then partitioned from the rest only. Also returns where the
  kept images stand in the full training set."""
  if fraction <= 0:
    return ds, None, np.arange(len(ds.y_train))
  train_idx, val_idx = holdout_split(len(ds.y_train), fraction, seed,
                                     ds.y_train)
  ids = ds.train_client_ids
  kept = dataclasses.replace(
      ds, x_train=ds.x_train[train_idx], y_train=ds.y_train[train_idx],
      train_client_ids=None if ids is None else ids[train_idx])
  return kept, (ds.x_train[val_idx], ds.y_train[val_idx]), train_idx


def _personalization(sim: SimulationConfig,
                     algorithm: Algorithm) -> Personalization:
  """How personal models are scored on the clients' own test parts: the
  algorithm's personal model, fine-tuned for --finetune_steps (or the
  algorithm's own personalization_steps, e.g. reptile's)."""
  alg = sim.algorithm_config
  return Personalization(
      steps=sim.finetune_steps or algorithm.personalization_steps,
      lr=sim.finetune_lr or algorithm.personalization_lr or alg.client_lr,
      # `personalize` reads the model's layout from the model it is given,
      # so the work before `bind_to_model` serves.
      batch_size=alg.local_batch_size or 32, work=algorithm.client_work)


def client_test_fraction(sim: SimulationConfig, algorithm: Algorithm
                         ) -> float:
  """--client_test_fraction; an algorithm evaluated after fine-tuning
  (reptile) holds out 20% when it is not given, as its evaluation did
  before the split existed."""
  if sim.client_test_fraction or not algorithm.personalization_steps:
    return sim.client_test_fraction
  return 0.2


def _objective(config: FederatedRunConfig, data: FederatedData,
               algorithm: Algorithm) -> Objective:
  settings = EvaluationSettings(
      batch_size=config.eval_batch_size,
      per_client_eval=config.simulation.per_client_eval,
      seed=config.simulation.seed,
      personalization=_personalization(config.simulation, algorithm),
      knn_train_examples=config.knn_train_examples)
  if config.objective == "supervised":
    return SupervisedObjective(data, config.model_name, config.model,
                               settings)
  return SelfSupervisedObjective(data, config.model_name, config.model,
                                 config.ssl, settings)


class Simulation:
  """One federated run, composed: data and clients, the objective (what the
  clients learn, how the global model is scored), the algorithm on a
  backend (`BackendRounds`), and the round loop that runs them into the
  results files."""

  def __init__(self, config: FederatedRunConfig, out_dir: str,
               run_config: Dict, resume: bool = False):
    config.validate()
    # Read (and refused) before anything is written to out_dir.
    self.source = read_source_encoder(config.encoder_init)
    self.config = config
    self.sim = config.simulation
    self.out_dir = out_dir
    self.resume = resume
    algorithm = with_aggregator(
        build_algorithm(self.sim.algorithm, self.sim.algorithm_config,
                        self.sim.algorithm_params),
        self.sim.aggregator, self.sim.aggregator_params)
    self.ds, validation, self.train_positions = _hold_out_validation(
        load_dataset(config.data), config.val_fraction, self.sim.seed)
    logging.info("dataset %s", self.ds.describe())
    check_source_fits(self.source, config.model_name, config.model,
                      self.ds.input_shape, self.ds.num_classes)
    self.clients = partition(config.partitioner, self.ds.y_train,
                             config.partition, self.ds.train_client_ids)
    client_test = None
    test_fraction = client_test_fraction(self.sim, algorithm)
    if test_fraction:
      # Clients train on their training parts only, from here on.
      self.clients, client_test = split_clients(self.clients, test_fraction,
                                                self.sim.seed)
    if config.label_fraction < 1.0:
      # From here on the clients are their labelled examples (the
      # partition report included); the rest of their images go unused.
      self.clients = labelled_clients(self.clients, config.label_fraction,
                                      self.sim.seed)
    self.data = FederatedData(
        self.ds, validation, self.clients,
        Normalization.for_scaling(config.input_scaling, self.ds.x_train),
        client_test)
    self.objective = _objective(config, self.data, algorithm)
    loss = self.objective.client_loss()
    if loss is not None:
      algorithm = dataclasses.replace(
          algorithm, client_work=algorithm.client_work.with_objective(loss))
    # BYOL: each client keeps its target network (byol_target.py).
    algorithm = with_target_network(algorithm, loss)
    algorithm = bind_to_model(algorithm, self.objective.build_model)
    algorithm = with_compression(algorithm, self.sim.compression)
    self.algorithm = algorithm
    self.feature_stats: Optional[FeatureStatistics] = None
    self.recorder = RunRecorder(out_dir, {
        "flags": run_config, "resolved": config,
        "dataset": self.ds.describe(), **source_record(self.source)},
        resume=resume)
    start_run_log(self.recorder, run_config)
    self.checkpointer = rounds_lib.Checkpointer(
        os.path.join(out_dir, "checkpoints"), setting=run_setting(run_config))
    self.tag = (f"{algorithm.name}/{config.model_name}/"
                f"{self.ds.name}/{self.sim.backend}/{self.sim.num_clients}/"
                f"{config.objective}")
    self._write_partition_report()
    write_malicious_clients(out_dir, self.sim)
    self.backend = self._make_backend()
    # Built after the backend: the tff backend traces Keras models in TF1
    # graphs, which invalidates Keras models made before it.
    self.eval_model = self._build_model()
    # Only here, eagerly: the initial global model is this model's weights
    # (the tff backend builds its replicas in graphs, where they need none).
    if self.source is not None:
      encoder = self.eval_model.get_layer("encoder")
      load_source_encoder(self.source, encoder, config.model_name,
                          config.model)
      if config.model.standardize_features:
        # Each client's sums, added (one round of federated analytics).
        self.feature_stats = encoder_feature_statistics(
            encoder, (self.ds.x_train[c] for c in self.clients),
            self.data.normalization)
        standardize_head_features(self.eval_model, self.feature_stats)
    self.rounds = BackendRounds(self.sim, algorithm, self.backend,
                                self.clients, self.eval_model,
                                self.checkpointer)
    self.evaluator = self.objective.evaluator(self.eval_model)

  def _build_model(self) -> tf.keras.Model:
    """The objective's model; with --freeze_encoder its encoder is not
    trainable, so no backend trains or averages it as a trainable weight."""
    model = self.objective.build_model()
    if self.source is not None and self.source.freeze:
      model.get_layer("encoder").trainable = False
    return model

  def train_examples(self) -> np.ndarray:
    """The clients' training examples as indices into the full training
    set (before the validation hold-out), sorted: what the centralized
    comparison trains on."""
    used = np.concatenate([np.asarray(c, np.int64) for c in self.clients])
    return np.sort(self.train_positions[used])

  def _make_backend(self) -> Backend:
    sim = self.sim
    parallel = sim.parallel_clients or max(2, os.cpu_count() or 1)
    spec = BackendSpec(
        algorithm=self.algorithm, model_fn=self._build_model,
        x_train=self.objective.client_inputs(), y_train=self.ds.y_train,
        batch_shape=batch_shape(sim, self.algorithm, self.clients),
        clients_per_round=sim.clients_per_round,
        num_clients=sim.num_clients, seed=sim.seed,
        parallel_clients=min(parallel, sim.clients_per_round),
        client_batching=sim.client_batching,
        tff_workers=sim.tff_workers, tff_data_dir=sim.tff_data_dir,
        tff_clients_per_call=sim.tff_clients_per_call,
        attack=sim.attack,
        num_classes=self.ds.num_classes)
    return BACKENDS.get(sim.backend)(spec)

  def _write_partition_report(self) -> None:
    hist = label_histogram(self.ds.y_train, self.clients, self.ds.num_classes)
    atomic_write_json(os.path.join(self.out_dir, "partition.json"),
                      {"summary": partition_summary(hist),
                       "client_sizes": [len(c) for c in self.clients]})
    labelled = ("" if self.config.label_fraction >= 1.0 else
                f", labelled {self.config.label_fraction:g}")
    plot_histogram(hist, os.path.join(self.out_dir, "partition.png"),
                   f"{self.config.partitioner}: {len(self.clients)} "
                   f"clients{labelled}")
    logging.info("partition %s", partition_summary(hist))

  def _summary(self) -> Dict:
    sim = self.sim
    return {"algorithm": self.algorithm.name,
            "backend": sim.backend,
            # The local backend's mode (`--client_batching=auto` picks it
            # per model); other backends have none.
            **({"client_execution": self.backend.execution}
               if hasattr(self.backend, "execution") else {}),
            "model": self.config.model_name,
            "parameters": count_params(self.eval_model),
            "dataset": self.ds.describe(),
            "partitioner": self.config.partitioner,
            # Exporters apply the same input normalization.
            "normalization": dataclasses.asdict(self.data.normalization),
            "num_clients": sim.num_clients,
            "clients_per_round": sim.clients_per_round,
            "label_fraction": self.config.label_fraction,
            "train_examples": int(self.train_examples().size),
            # The registered name chosen, else the algorithm's own rule.
            "aggregator": sim.aggregator or self.algorithm.aggregator.name,
            **source_record(self.source, self.feature_stats)}

  def run(self) -> Dict:
    sim = self.sim
    loop = RoundLoop(
        RoundLoopConfig(rounds=sim.rounds, eval_every=sim.eval_every,
                        checkpoint_every=sim.checkpoint_every,
                        target_accuracy=sim.target_accuracy,
                        stop_at_target=sim.stop_at_target),
        self.rounds, self.evaluator, self.recorder, self.checkpointer,
        self.tag, self.out_dir)
    summary = self._summary()

    def on_divergence(progress: Dict) -> None:
      summary.update(progress)
      self.recorder.write_summary(summary)

    result = loop.run(self.resume, on_divergence)
    state = result.state
    summary.update({f"final_{k}": v for k, v in result.last_eval.items()})
    client_accuracies = getattr(self.evaluator, "client_accuracies", None)
    if client_accuracies is not None:
      atomic_write_json(os.path.join(self.out_dir, "client_accuracy.json"),
                        client_accuracies)
    val_history = [r["val_accuracy"] for r in self.recorder.read_metrics()
                   if "val_accuracy" in r]
    if val_history:
      summary["best_val_accuracy"] = max(val_history)
      summary["validation_examples"] = int(len(self.data.validation[1]))
    summary.update(result.progress)
    summary.update(self.objective.final_metrics(self.eval_model, state))
    runtime = self.backend.runtime
    if runtime is not None:
      summary["tff_worker_pids"] = list(runtime.owned_pids)
      summary["tff_workers"] = runtime.num_workers
      summary["tff_clients_per_call"] = self.backend.clients_per_call
      summary["tff_clients_as"] = self.backend.clients_as
    if self.algorithm.aggregator.differentially_private:
      summary["dp"] = dp_epsilon(self.algorithm.aggregator.noise_multiplier,
                                 sim.clients_per_round / sim.num_clients,
                                 state.round_num, sim.num_clients)
    self._write_final_model(state, summary)
    self.final_state = state
    return summary

  def _write_final_model(self, state: rounds_lib.ServerState,
                         summary: Dict) -> None:
    """The objective's final model (model.keras: the global classifier;
    encoder.keras: a self-supervised run's encoder), then summary.json with
    the run's kind."""
    load_state(self.eval_model, state)
    model, kind = self.objective.final_model(self.eval_model)
    write_final_model(self.recorder, model, kind, summary,
                      self.data.normalization)

  def close(self) -> None:
    self.backend.close()


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
        val_fraction=0.0, input_scaling=config.input_scaling,
        encoder_init=config.encoder_init)
    central_summary = run_centralized(
        central, os.path.join(out_dir, "centralized"),
        {"from": "federated comparison",
         "train_examples": "the federated clients' training examples"},
        resume=resume, train_indices=simulation.train_examples())
    summary["centralized_test_accuracy"] = central_summary["test_accuracy"]
    summary["centralized_epochs"] = config.centralized_epochs
    simulation.recorder.write_summary(summary)
  return summary
