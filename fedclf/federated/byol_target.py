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

The state holds every target weight, BatchNorm moving statistics included:
the target is a frozen Keras model, whose BatchNorm layers run in inference
mode on those statistics (themselves an EMA of the online network's), then
a flag that is 1 until the client first trains.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Sequence, Tuple

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated.client_work import ClientOutput
from fedclf.federated.client_work import ClientWork
from fedclf.federated.client_work import WrappedWork
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


def target_layout(model: tf.keras.Model) -> List[Tuple[bool, int]]:
  """For each target weight (in `target_variables` order), where its online
  counterpart is: (True, index in `model.trainable_variables`) or (False,
  index in `model.non_trainable_variables`)."""
  trainable = {v.ref(): i for i, v in enumerate(model.trainable_variables)}
  other = {v.ref(): i for i, v in enumerate(model.non_trainable_variables)}
  return [(True, trainable[o.ref()]) if o.ref() in trainable else
          (False, other[o.ref()]) for _, o in _pairs(model)]


def target_variables(model: tf.keras.Model) -> List[tf.Variable]:
  """The target network's weights, the client state's order."""
  return [t for t, _ in _pairs(model)]


class PerClientTarget(WrappedWork):
  """An algorithm's client work plus a per-client BYOL target network (see
  the module docstring); a `ClientWork`. Client state: the inner work's,
  then the target's weights, then the fresh flag."""

  stateful = True

  def __init__(self, inner: ClientWork):
    super().__init__(inner)
    self.layout: Optional[List[Tuple[bool, int]]] = None
    self.shapes: Optional[List[tf.TensorShape]] = None

  def with_model(self, model: tf.keras.Model) -> "PerClientTarget":
    """A copy that knows which online weights the target mirrors (see
    `fedclf.federated.personal.bind_to_model`)."""
    clone = super().with_model(model)
    clone.layout = target_layout(model)
    clone.shapes = [v.shape for v in target_variables(model)]
    return clone

  def initial_client_state(self, trainable: Sequence[tf.Tensor]) -> Tensors:
    """The inner work's state, then the target (placeholders: `train`
    copies the broadcast online network while the last entry, the fresh
    flag, is 1)."""
    if self.layout is None:
      raise ValueError("PerClientTarget: call with_model(model) first")
    return (list(self.inner.initial_client_state(trainable)) +
            [tf.zeros(shape) for shape in self.shapes] + [tf.constant(1.0)])

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
    split = len(client_state) - len(self.layout) - 1
    previous = list(client_state[split:])
    fresh = previous[-1] > 0
    broadcast = [global_trainable[i] if is_trainable else
                 global_non_trainable[i] for is_trainable, i in self.layout]
    targets = target_variables(model)
    for var, value, online in zip(targets, previous, broadcast):
      var.assign(tf.where(fresh, online, value))
    out = self.inner.train(model, velocity, global_trainable,
                           global_non_trainable, batches, num_examples,
                           list(client_state[:split]), server_extra, seed)
    dropped = out.dropped > 0
    new_target = [tf.where(dropped, p, tf.identity(v))
                  for p, v in zip(previous, targets)]
    new_target.append(tf.where(dropped, previous[-1], 0.0))
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
