"""Federated BYOL: each client keeps its own target network.

BYOL (Grill et al. 2020) trains an online network (encoder, projector,
predictor) to predict a target network's projection of another view; the
target (encoder, projector) is not trained but follows the online network
by an exponential moving average after every optimizer step.

Where the target lives: on each client, as its persistent client state, as
in FedU (Zhuang et al. 2021, "Collaborative Unsupervised Visual
Representation Learning from Decentralized Data", ICCV; Sec. 3.2: "the
target encoder ... is kept locally") and FedEMA (Zhuang et al. 2022,
"Divergence-aware Federated Self-Supervised Learning", ICLR; Alg. 1). The
clients train the online network from the broadcast one and upload it; the
server averages it (FedAvg or any algorithm); the target never leaves the
client. A client's target starts, in its first round, as a copy of the
broadcast online network (BYOL's own initialization), is loaded into the
replica's target network before local training, moves by EMA after every
local step (`Byol.after_step`, rate `byol_momentum`), and is the client's
new state afterwards (checkpointed with the other client states). Why not
on the server: a server-side target would be an EMA of averaged models,
one step per round, so it would barely move within the local epochs the
BYOL objective needs it to follow; per-client state also costs nothing in
communication.

The state holds the target's counterparts of the online network's
trainable weights only: the target runs in training mode (BatchNorm on
batch statistics, see `ssl_step_loss`), so its moving statistics are never
read.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable, List, Optional, Sequence

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated.client_work import ClientOutput
from fedclf.federated.client_work import ClientWork
from fedclf.federated.client_work import Tensors
from fedclf.federated.personal_work import PerFedAvgWork
from fedclf.federated.personal_work import PersonalPartSGD
from fedclf.federated.ssl_objective import SslClientObjective

# Client works with their own local loop, which does not run the
# objective's after-step hook (the target's EMA).
_OWN_LOOP = (PersonalPartSGD, PerFedAvgWork)


def ema(target: Sequence, online: Sequence, momentum: float) -> List:
  """BYOL's target update: momentum * target + (1 - momentum) * online."""
  return [momentum * t + (1.0 - momentum) * o
          for t, o in zip(target, online)]


def _pairs(model: tf.keras.Model):
  """(target variable, online variable) of the model's BYOL method, layer
  by layer (clones list their weights in the original's order)."""
  method = model.method
  return (list(zip(method.target_encoder.weights, model.encoder.weights)) +
          list(zip(method.target_projector.weights,
                   method.projector.weights)))


def target_indices(model: tf.keras.Model) -> List[int]:
  """For each target weight kept as state, the index of its online
  counterpart in `model.trainable_variables`."""
  position = {v.ref(): i for i, v in enumerate(model.trainable_variables)}
  return [position[o.ref()] for _, o in _pairs(model)
          if o.ref() in position]


def target_variables(model: tf.keras.Model) -> List[tf.Variable]:
  """The target weights kept as client state, in `target_indices` order."""
  trainable = {v.ref() for v in model.trainable_variables}
  return [t for t, o in _pairs(model) if o.ref() in trainable]


class PerClientTarget:
  """An algorithm's client work plus a per-client BYOL target network (see
  the module docstring); a `ClientWork`. Client state: the inner work's,
  then the target's weights."""

  stateful = True

  def __init__(self, inner: ClientWork,
               indices: Optional[Sequence[int]] = None):
    self.inner = inner
    self.indices = None if indices is None else list(indices)

  def __getattr__(self, name: str):
    # Settings and hooks the backends or server steps ask for: the inner
    # work's.
    if name == "inner" or name.startswith("__"):
      raise AttributeError(name)
    return getattr(self.inner, name)

  def with_objective(self, objective: Callable) -> "PerClientTarget":
    clone = copy.copy(self)
    clone.inner = self.inner.with_objective(objective)
    return clone

  def with_model(self, model: tf.keras.Model) -> "PerClientTarget":
    """A copy that knows which online weights the target mirrors (see
    `fedclf.federated.personal.bind_to_model`)."""
    clone = copy.copy(self)
    inner_with_model = getattr(self.inner, "with_model", None)
    if inner_with_model is not None:
      clone.inner = inner_with_model(model)
    clone.indices = target_indices(model)
    return clone

  def initial_client_state(self, trainable: Sequence[tf.Tensor]) -> Tensors:
    """The inner work's state, then the target: a copy of the broadcast
    online network."""
    if self.indices is None:
      raise ValueError("PerClientTarget: call with_model(model) first")
    return (list(self.inner.initial_client_state(trainable)) +
            [tf.identity(trainable[i]) for i in self.indices])

  def initial_server_extra(self, trainable):
    return self.inner.initial_server_extra(trainable)

  def update_server_extra(self, extra, mean_extra_delta, participation):
    return self.inner.update_server_extra(extra, mean_extra_delta,
                                          participation)

  def train(self, model, velocity, global_trainable, global_non_trainable,
            batches, num_examples, client_state, server_extra,
            seed) -> ClientOutput:
    """The inner work's training with the client's target loaded; the
    target after the last step's EMA becomes its state (a dropped client
    keeps the old one)."""
    split = len(client_state) - len(self.indices)
    previous = list(client_state[split:])
    targets = target_variables(model)
    for var, value in zip(targets, previous):
      var.assign(value)
    out = self.inner.train(model, velocity, global_trainable,
                           global_non_trainable, batches, num_examples,
                           list(client_state[:split]), server_extra, seed)
    dropped = out.dropped > 0
    new_target = [tf.where(dropped, p, tf.identity(v))
                  for p, v in zip(previous, targets)]
    return dataclasses.replace(
        out, client_state=list(out.client_state) + new_target)


def with_target_network(algorithm, objective: Optional[Callable]):
  """`algorithm` (an `algorithms.Algorithm`) with its client work keeping
  a per-client target network when `objective` is BYOL's; unchanged
  otherwise."""
  if not (isinstance(objective, SslClientObjective) and
          objective.method == "byol"):
    return algorithm
  if isinstance(algorithm.client_work, _OWN_LOOP):
    raise UserError(f"byol cannot be federated with {algorithm.name}: its "
                    f"client work runs its own local loop, without BYOL's "
                    f"target update")
  return dataclasses.replace(
      algorithm, client_work=PerClientTarget(algorithm.client_work))
