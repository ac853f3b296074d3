"""What the round loop needs of a backend, and what a backend is built from.

A backend runs an `Algorithm`'s rounds: it trains the reporting clients of a
round, aggregates their updates and updates the server state. Backends are
registered by name in `fedclf.registry.BACKENDS` as factories taking one
`BackendSpec` (see `fedclf.federated.backends`).

This module imports neither TensorFlow nor the algorithm modules at run
time: `config.py` imports the backends package to validate `--backend`, and
the algorithm modules import `config.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, NamedTuple, Optional, Protocol
from typing import Sequence, Tuple
from typing import TYPE_CHECKING

import numpy as np

from fedclf.federated.attack_config import AttackConfig

if TYPE_CHECKING:
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from fedclf.federated.algorithms import Algorithm
  from fedclf.federated.backends.tff_context import TffRuntime
  from fedclf.federated.client_work import ClientOutput
  from fedclf.federated.rounds import ServerState
  # pylint: enable=g-import-not-at-top


class ClientTask(NamedTuple):
  """One reporting client's work in a round (a tuple: backends index and
  unpack it)."""
  client_id: int
  matrix: np.ndarray  # step x batch example indices (-1: padding)
  steps: int
  examples: int
  seed: np.ndarray  # [2] int64, from (run seed, round, client)
  malicious: float = 0.0  # 1.0: an attacker's client (attack_config.py)


@dataclasses.dataclass(frozen=True)
class BackendSpec:
  """Everything a backend is constructed from; each backend uses what
  applies to it."""
  algorithm: Algorithm
  # Builds a fresh model of the run (the backends' replicas, TFF's traces).
  model_fn: Callable[[], tf.keras.Model]
  # Normalized training images and their labels; clients are index sets.
  x_train: np.ndarray
  y_train: np.ndarray
  # (local steps, batch width) of every client's batch index matrix.
  batch_shape: Tuple[int, int]
  # Clients sampled per round (DP aggregators scale their noise by it).
  clients_per_round: int
  num_clients: int
  seed: int
  # `local`: clients trained concurrently in one graph (>= 1).
  parallel_clients: int = 1
  # `local`: "on" trains groups of clients as one batched computation on
  # stacked weights (backends/batched.py), "off" in model replicas, "auto"
  # batched where the model and client work allow it and it measured
  # faster (models up to batched.AUTO_MAX_WEIGHTS weights per client).
  client_batching: str = "auto"
  # `tff`: host:port of running TFF workers; empty starts one owned worker.
  tff_workers: Tuple[str, ...] = ()
  # `tff`: the folder, on the workers' machines, holding the training
  # arrays' files (tff_data.py); the driver writes them there; "" = a folder
  # in this machine's temp dir (workers on this machine).
  tff_data_dir: str = ""
  # `tff`: the most clients one worker call trains (a slice of the round:
  # tff_slices.py, or TffRuntime.split_context for rounds with one TFF
  # client per client); 0 = tff.DEFAULT_CLIENTS_PER_CALL.
  tff_clients_per_call: int = 0
  # What malicious clients (ClientTask.malicious) do to their update or
  # labels; label flipping needs the number of classes.
  attack: AttackConfig = AttackConfig()
  num_classes: int = 0


class Backend(Protocol):
  """The interface `Simulation` drives."""

  name: str
  # `tff`: the runtime whose workers run the rounds (the run's summary
  # records their pids); None for backends without one, and once closed.
  runtime: Optional[TffRuntime]

  def initial_state(self, model: tf.keras.Model) -> ServerState:
    """The round-0 server state: `model`'s weights, fresh optimizer and
    aggregator state, the algorithm's initial server extras."""

  def run_round(self, state: ServerState, tasks: Sequence[ClientTask],
                client_states: Dict[int, List[np.ndarray]], round_num: int
                ) -> Tuple[ServerState, List[ClientOutput]]:
    """Trains the tasks' clients, aggregates and updates the server.

    Returns the new state (with `round_num`) and one output per task, in
    task order; a client whose training raised is in it with `failed = 1`.
    """

  def round_metrics(self) -> Dict[str, float]:
    """Fields the backend adds to the last `run_round`'s metrics row
    (`tff`: gRPC bytes to and from the workers)."""

  def close(self) -> None:
    """Frees what the backend holds (TFF workers); idempotent."""
