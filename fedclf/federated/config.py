"""Typed configuration of federated algorithms and simulations.

Binaries build these from flags; the library takes nothing else. What every
algorithm reads is `AlgorithmConfig`; an algorithm's own hyper-parameters
(FedProx's mu, DP-FedAvg's clip, ...) are a params dataclass registered
beside its factory in `algorithms/` (see `fedclf.plugin_config`), carried
here as `SimulationConfig.algorithm_params`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Tuple

from fedclf.errors import UserError
from fedclf.federated.attack_config import AttackConfig
# Filled by fedclf.federated.backends, which the package imports (a
# module-level import of it here would close a cycle through its backends).
from fedclf.registry import AGGREGATORS
from fedclf.registry import BACKENDS

CLIENT_OPTIMIZERS = ("sgd", "momentum")
SERVER_OPTIMIZERS = ("sgd", "momentum", "adam", "yogi", "adagrad")
# The local backend's execution of a group of clients (BackendSpec).
CLIENT_BATCHING = ("auto", "on", "off")


def _require_finite(config, prefix: str = "") -> None:
  """Refuses NaN and infinite float fields: NaN slips through every range
  check below (all comparisons with it are false), and no setting means
  infinity."""
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if isinstance(value, float) and not math.isfinite(value):
      raise UserError(f"{prefix}{field.name} must be a finite number, got "
                      f"{value}")


@dataclasses.dataclass(frozen=True)
class ServerOptimizerConfig:
  """The server's optimizer, applied to the aggregated model delta as a
  pseudo-gradient (Reddi et al. 2021). Defaults match tff.learning's."""
  name: str = "sgd"
  learning_rate: float = 0.0  # 0: the default for `name` (see resolved())
  momentum: float = 0.0  # "momentum" only
  beta_1: float = 0.9
  beta_2: float = 0.99
  epsilon: float = 1e-3  # adam/yogi: Reddi et al.'s tau
  initial_accumulator: float = 0.0  # yogi/adagrad preconditioner start

  def resolved(self) -> "ServerOptimizerConfig":
    """With the default learning rate filled in: 1.0 for SGD/momentum (plain
    averaging), 0.01 for adaptive optimizers (Reddi et al.'s range)."""
    if self.learning_rate:
      return self
    default = 1.0 if self.name in ("sgd", "momentum") else 0.01
    return dataclasses.replace(self, learning_rate=default)

  def validate(self) -> None:
    _require_finite(self, "server ")
    if self.name not in SERVER_OPTIMIZERS:
      raise UserError(f"unknown server optimizer {self.name!r}; choose one "
                      f"of: {', '.join(SERVER_OPTIMIZERS)}")
    if self.learning_rate < 0:
      raise UserError(f"server_lr must be > 0 (0 = default), got "
                      f"{self.learning_rate}")
    if not 0.0 <= self.momentum < 1.0:
      raise UserError(f"server_momentum must be in [0, 1), got "
                      f"{self.momentum}")
    if not (0 <= self.beta_1 < 1 and 0 <= self.beta_2 < 1):
      raise UserError("server beta_1 and beta_2 must be in [0, 1)")
    if self.epsilon < 0 or self.initial_accumulator < 0:
      raise UserError("server epsilon and initial_accumulator must be >= 0")


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
  """What every algorithm shares: the clients' optimizer and local work,
  and the server optimizer. An algorithm's own hyper-parameters are its
  params dataclass (`SimulationConfig.algorithm_params`)."""
  client_optimizer: str = "sgd"
  client_lr: float = 0.1
  client_momentum: float = 0.0
  # L2 penalty wd/2 |w|^2 added to each client step's gradient as wd * w
  # (PyTorch SGD's weight_decay, which NIID-Bench's code uses).
  client_weight_decay: float = 0.0
  local_epochs: int = 1
  local_batch_size: int = 10  # 0: the client's whole dataset is one batch
  server: ServerOptimizerConfig = ServerOptimizerConfig()

  def validate(self) -> None:
    _require_finite(self)
    if self.client_optimizer not in CLIENT_OPTIMIZERS:
      raise UserError(f"unknown client optimizer {self.client_optimizer!r}; "
                      f"choose one of: {', '.join(CLIENT_OPTIMIZERS)}")
    if not self.client_lr > 0:
      raise UserError(f"client_lr must be > 0, got {self.client_lr}")
    if not 0.0 <= self.client_momentum < 1.0:
      raise UserError(f"client_momentum must be in [0, 1), got "
                      f"{self.client_momentum}")
    if self.client_weight_decay < 0:
      raise UserError(f"client_weight_decay must be >= 0, got "
                      f"{self.client_weight_decay}")
    if self.local_epochs < 1:
      raise UserError(f"local_epochs must be >= 1, got {self.local_epochs}")
    if self.local_batch_size < 0:
      raise UserError(f"local_batch_size must be >= 0 (0 = full batch), got "
                      f"{self.local_batch_size}")
    self.server.validate()


COMPRESSIONS = ("none", "topk", "quantize")


@dataclasses.dataclass(frozen=True)
class CompressionConfig:
  """How clients encode their model delta before uploading it, with any
  algorithm (the codec is `compression.CompressedUpload`)."""
  method: str = "none"  # none, topk (with error feedback) or quantize
  topk_fraction: float = 0.1  # topk: share of each tensor's entries sent
  quantize_bits: int = 8  # quantize: bits per entry

  def validate(self) -> None:
    _require_finite(self, "compression ")
    if self.method not in COMPRESSIONS:
      raise UserError(f"unknown compression {self.method!r}; choose one of: "
                      f"{', '.join(COMPRESSIONS)}")
    if not 0.0 < self.topk_fraction <= 1.0:
      raise UserError(f"topk_fraction must be in (0, 1], got "
                      f"{self.topk_fraction}")
    if not 1 <= self.quantize_bits <= 16:
      raise UserError(f"quantize_bits must be in 1..16, got "
                      f"{self.quantize_bits}")


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
  """One federated simulation run (what `simulations.federated` does)."""
  algorithm: str = "fedavg"
  algorithm_config: AlgorithmConfig = AlgorithmConfig()
  # The algorithm's params dataclass as registered beside its factory (e.g.
  # FedProxParams); None: its defaults. Checked by `build_algorithm`.
  algorithm_params: Any = None
  num_clients: int = 100
  clients_per_round: int = 10
  rounds: int = 10
  client_dropout: float = 0.0  # chance a sampled client fails to report
  straggler_fraction: float = 0.0  # chance a client stops early this round
  max_local_steps: int = 0  # cap on any client's steps per round; 0 = none
  eval_every: int = 1
  per_client_eval: int = 20  # clients whose local accuracy is measured
  checkpoint_every: int = 10
  backend: str = "local"
  parallel_clients: int = 0  # local backend; 0 = one per CPU core (>= 2)
  # local backend: auto, on or off (see BackendSpec.client_batching).
  client_batching: str = "auto"
  tff_workers: Tuple[str, ...] = ()
  # tff backend: where the workers read the training arrays (the driver
  # writes them there; "" = a folder in this machine's temp dir).
  tff_data_dir: str = ""
  # tff backend: the most clients a worker trains in one call (0 = the
  # default, backends.tff.DEFAULT_CLIENTS_PER_CALL); bounds its memory.
  tff_clients_per_call: int = 0
  target_accuracy: float = 0.0  # report the first round reaching it
  stop_at_target: bool = False
  # A mean client loss above this stops the run as diverged (0 = only
  # NaN/Inf does): an exploding run can stay finite (1e14) while its model
  # is already dead, and would otherwise burn every remaining round.
  max_train_loss: float = 0.0
  seed: int = 0
  # The clients' upload codec (default: dense float32 deltas).
  compression: CompressionConfig = CompressionConfig()
  # A registered aggregator (fedclf.registry.AGGREGATORS) in place of the
  # algorithm's own; "": the algorithm's. Its params dataclass (None: its
  # defaults) is checked when the aggregator is built.
  aggregator: str = ""
  aggregator_params: Any = None
  # Malicious clients and their attack (attack_config.py); off by default.
  attack: AttackConfig = AttackConfig()
  # Share of each client's examples held out (seeded) as its own test part:
  # it never trains on them, and each evaluation scores every sampled
  # client's personal model there (personal_accuracy_*). 0: off.
  client_test_fraction: float = 0.0
  # SGD steps of local fine-tuning on a client's training part before its
  # personal model is scored (any algorithm; 0: the algorithm's own, e.g.
  # reptile's personalization_steps), at finetune_lr (0: client_lr).
  finetune_steps: int = 0
  finetune_lr: float = 0.0

  def validate(self) -> None:
    _require_finite(self)
    if self.num_clients < 1:
      raise UserError(f"num_clients must be >= 1, got {self.num_clients}")
    if not 1 <= self.clients_per_round <= self.num_clients:
      raise UserError(
          f"clients_per_round must be in [1, num_clients={self.num_clients}]"
          f", got {self.clients_per_round}")
    if self.rounds < 1:
      raise UserError(f"rounds must be >= 1, got {self.rounds}")
    for name in ("client_dropout", "straggler_fraction"):
      value = getattr(self, name)
      if not 0.0 <= value < 1.0:
        raise UserError(f"{name} must be in [0, 1), got {value}")
    if self.max_local_steps < 0 or self.eval_every < 1:
      raise UserError("max_local_steps must be >= 0 and eval_every >= 1")
    if self.per_client_eval < 0 or self.checkpoint_every < 0:
      raise UserError("per_client_eval and checkpoint_every must be >= 0")
    BACKENDS.get(self.backend)  # unknown: the error lists the names
    if self.parallel_clients < 0:
      raise UserError("parallel_clients must be >= 0")
    if self.client_batching not in CLIENT_BATCHING:
      raise UserError(f"client_batching must be one of "
                      f"{', '.join(CLIENT_BATCHING)}, got "
                      f"{self.client_batching!r}")
    if self.client_batching == "on" and self.backend != "local":
      raise UserError("--client_batching=on needs --backend=local")
    if not 0.0 <= self.target_accuracy <= 1.0:
      raise UserError("target_accuracy must be in [0, 1]")
    if self.max_train_loss < 0:
      raise UserError("max_train_loss must be >= 0 (0 = no ceiling)")
    if self.tff_workers and self.backend != "tff":
      raise UserError("--tff_workers needs --backend=tff")
    if self.tff_data_dir and self.backend != "tff":
      raise UserError("--tff_data_dir needs --backend=tff")
    if self.tff_clients_per_call < 0:
      raise UserError(f"tff_clients_per_call must be >= 0 (0 = the "
                      f"default), got {self.tff_clients_per_call}")
    if self.tff_clients_per_call and self.backend != "tff":
      raise UserError("--tff_clients_per_call needs --backend=tff")
    if not 0.0 <= self.client_test_fraction < 1.0:
      raise UserError(f"client_test_fraction must be in [0, 1), got "
                      f"{self.client_test_fraction}")
    if self.finetune_steps < 0 or self.finetune_lr < 0:
      raise UserError("finetune_steps and finetune_lr must be >= 0")
    self.algorithm_config.validate()
    self.compression.validate()
    if self.aggregator:
      AGGREGATORS.get(self.aggregator)  # unknown: the error lists the names
    self.attack.validate()
