"""The round runner of algorithm simulations: an algorithm's client work run
on a backend (`local` or `tff`).

`BackendRounds.train_round` plans the round (sampling, dropout, stragglers:
`rounds.plan_round`), builds each reporting client's batches (example
indices, seeded by (seed, round, client)), lets the backend train the
clients and update the server, and turns the clients' outputs into the
round's training row: failed and non-finite clients are dropped and counted,
a non-finite or exploding loss raises a DivergenceError.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from fedclf.federated import rounds as rounds_lib
from fedclf.federated.algorithms import Algorithm
from fedclf.federated.attack_config import malicious_clients
from fedclf.federated.backends.protocol import ClientTask
from fedclf.federated.communication import add_communication_fields
from fedclf.federated.config import SimulationConfig
from fedclf.federated.round_loop import diverged
from fedclf.federated.rounds import Checkpointer
from fedclf.federated.rounds import ServerState

_REMEDY = "lower --client_lr or --server_lr"


def _all_finite(arrays) -> bool:
  return all(np.all(np.isfinite(a)) for a in arrays)


class BackendRounds:
  """Rounds of `algorithm` over `clients` on `backend` (a RoundRunner)."""

  def __init__(self, sim: SimulationConfig, algorithm: Algorithm, backend,
               clients: Sequence[np.ndarray], model: tf.keras.Model,
               checkpointer: Checkpointer):
    self.sim = sim
    self.algorithm = algorithm
    self.backend = backend
    self.clients = clients
    # Its weights are the initial global model.
    self.model = model
    self.checkpointer = checkpointer
    self.batch_shape = batch_shape(sim, algorithm, clients)
    self.malicious = frozenset(malicious_clients(
        sim.num_clients, sim.attack.malicious_fraction, sim.seed))

  def initial_state(self) -> ServerState:
    return self.backend.initial_state(self.model)

  def _tasks(self, plan: rounds_lib.RoundPlan, round_num: int):
    tasks = []
    epochs = local_epochs(self.sim, self.algorithm)
    batch = local_batch_size(self.sim, self.algorithm)
    for cid in plan.reporting:
      cid = int(cid)
      rng = rounds_lib.round_rng(self.sim.seed, round_num, 1000 + cid)
      cap = self.sim.max_local_steps
      if cid in plan.step_fraction:
        full = rounds_lib.local_steps(len(self.clients[cid]), epochs, batch)
        budget = max(1, int(full * plan.step_fraction[cid]))
        cap = min(cap, budget) if cap else budget
      matrix, steps = rounds_lib.client_batches(
          self.clients[cid], epochs, batch, rng, cap, self.batch_shape)
      tasks.append(ClientTask(
          cid, matrix, steps, len(self.clients[cid]),
          rounds_lib.client_seed(self.sim.seed, round_num, cid),
          float(cid in self.malicious)))
    return tasks

  def train_round(self, state: ServerState,
                  client_states: Dict[int, List[np.ndarray]],
                  round_num: int) -> Tuple[ServerState, Dict[str, float]]:
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
    if self.malicious:
      # Which reporting clients attacked (TensorBoard takes the count only).
      attackers = [int(c) for c in plan.reporting if int(c) in self.malicious]
      row["malicious_reported"] = len(attackers)
      row["malicious_clients"] = attackers
    if not tasks:
      logging.warning("round %d: no sampled client reported; the model is "
                      "unchanged", round_num)
      return dataclasses.replace(state, round_num=round_num), row
    new_state, outputs = self.backend.run_round(state, tasks, client_states,
                                                round_num)
    self._training_row(row, outputs, round_num)
    add_communication_fields(row, outputs, state, len(plan.sampled))
    # A plugin backend written before round_metrics existed adds nothing.
    row.update(getattr(self.backend, "round_metrics", dict)())
    if not _all_finite(new_state.model_weights()):
      raise diverged(self.checkpointer, round_num, "non-finite global "
                     "weights", _REMEDY)
    if self.algorithm.client_work.stateful:
      for (cid, *_), out in zip(tasks, outputs):
        client_states[cid] = [np.asarray(t) for t in out.client_state]
    return new_state, row

  def _training_row(self, row: Dict[str, float], outputs,
                    round_num: int) -> None:
    """Adds the clients' losses and counts to `row`; raises on a round
    that failed or diverged."""
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
      raise diverged(self.checkpointer, round_num, "every client's training "
                     "became NaN/Inf", _REMEDY)
    loss_sum = float(sum(float(o.loss_sum) for o in finite))
    seen = float(sum(float(o.examples) for o in finite))
    row["train_loss"] = loss_sum / max(seen, 1.0)
    row["train_accuracy"] = float(
        sum(float(o.correct) for o in finite)) / max(seen, 1.0)
    row["examples"] = seen
    if not math.isfinite(row["train_loss"]):
      raise diverged(self.checkpointer, round_num,
                     f"client loss {row['train_loss']}", _REMEDY)
    ceiling = self.sim.max_train_loss
    if ceiling and row["train_loss"] > ceiling:
      raise diverged(self.checkpointer, round_num,
                     f"client loss {row['train_loss']:.4g} is above "
                     f"--max_train_loss={ceiling:g}", _REMEDY)


def local_batch_size(sim: SimulationConfig, algorithm: Algorithm) -> int:
  return 0 if algorithm.full_batch else sim.algorithm_config.local_batch_size


def local_epochs(sim: SimulationConfig, algorithm: Algorithm) -> int:
  return 1 if algorithm.single_epoch else sim.algorithm_config.local_epochs


def batch_shape(sim: SimulationConfig, algorithm: Algorithm,
                clients: Sequence[np.ndarray]) -> Tuple[int, int]:
  """(steps, batch) of the largest client's index matrix: every client's
  batches are padded to it so the client work traces once."""
  batch = local_batch_size(sim, algorithm)
  largest = max(len(c) for c in clients)
  steps = rounds_lib.local_steps(largest, local_epochs(sim, algorithm), batch)
  if sim.max_local_steps:
    steps = min(steps, sim.max_local_steps)
  return (steps, largest if batch == 0 else batch)
