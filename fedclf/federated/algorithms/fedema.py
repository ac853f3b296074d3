"""FedEMA (Zhuang et al. 2022, "Divergence-aware Federated Self-Supervised
Learning", ICLR): clients blend the global model into their own instead of
restarting from it."""

from __future__ import annotations

import dataclasses
from typing import List, Sequence, Tuple

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.config import AlgorithmConfig
from fedclf.registry import ALGORITHMS


@dataclasses.dataclass(frozen=True)
class FedEmaParams:
  fedema_lambda: float = dataclasses.field(
      default=1.0, metadata={"help": "FedEMA: mu = min(lambda * |w_global - "
                                     "w_client|, 1), the weight a returning "
                                     "client keeps of its own model."})
  fedema_tau: float = dataclasses.field(
      default=0.0, metadata={"help": "FedEMA autoscaler: >0 sets each "
                                     "client's lambda to tau / |w_global - "
                                     "w_client| at its first return (so its "
                                     "first mu is tau); 0 uses "
                                     "fedema_lambda."})

  def validate(self) -> None:
    if self.fedema_lambda < 0:
      raise UserError(f"fedema_lambda must be >= 0, got {self.fedema_lambda}")
    if not 0.0 <= self.fedema_tau <= 1.0:
      raise UserError(f"fedema_tau must be in [0, 1], got {self.fedema_tau}")


def divergence_aware_start(global_trainable: Sequence[tf.Tensor],
                           previous: Sequence[tf.Tensor], meta: tf.Tensor,
                           lam: float, tau: float
                           ) -> Tuple[List[tf.Tensor], tf.Tensor, tf.Tensor]:
  """FedEMA's local model at the start of a round.

  mu = min(lambda * |w_g - w_prev|, 1) (L2 norm over all trainable weights)
  and the client starts from mu * w_prev + (1 - mu) * w_g; a client in its
  first round (no previous model) starts from w_g. With `tau` > 0, lambda
  is the client's own, tau / |w_g - w_prev| fixed at its first return.

  Args:
    global_trainable: the broadcast weights w_g.
    previous: the client's local weights after its last round, w_prev.
    meta: [2] float32: [1 if the client trained before, its own lambda (-1
      until set)].
    lam: the fixed lambda (used when tau is 0).
    tau: the autoscaler's target first mu (0: off).

  Returns:
    (start weights, new meta, mu).
  """
  seen = meta[0] > 0
  divergence = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g - p)) for g, p in
                                 zip(global_trainable, previous)]))
  if tau > 0:
    scale = tf.where(meta[1] < 0, tau / tf.maximum(divergence, 1e-12),
                     meta[1])
  else:
    scale = tf.constant(float(lam))
  mu = tf.where(seen, tf.minimum(scale * divergence, 1.0), 0.0)
  start = [mu * p + (1.0 - mu) * g
           for g, p in zip(global_trainable, previous)]
  new_meta = tf.stack([tf.constant(1.0), tf.where(seen, scale, -1.0)])
  return start, new_meta, mu


class FedEmaWork(LocalSGD):
  """Local SGD from FedEMA's divergence-aware blend of the broadcast model
  and the client's previous local one (see `divergence_aware_start`).

  Client state: the client's local trainable weights after its last round
  and [trained before, own lambda]. The reported delta is the broadcast
  model minus the local one, so the server (FedAvg) averages the local
  models, as in the paper. BatchNorm statistics come from the broadcast
  model.
  """

  stateful = True

  def __init__(self, config: AlgorithmConfig, lam: float, tau: float):
    super().__init__(config)
    self.lam = float(lam)
    self.tau = float(tau)

  def initial_client_state(self, trainable):
    return ([tf.identity(w) for w in trainable] +
            [tf.constant([0.0, -1.0], tf.float32)])

  def train(self, model, velocity, global_trainable, global_non_trainable,
            batches, num_examples, client_state, server_extra, seed):
    previous, meta = list(client_state[:-1]), client_state[-1]
    start, new_meta, _ = divergence_aware_start(
        global_trainable, previous, meta, self.lam, self.tau)
    out = super().train(model, velocity, start, global_non_trainable,
                        batches, num_examples, [], server_extra, seed)
    dropped = out.dropped > 0
    # out.delta is start - local (0 when dropped).
    local = [s - d for s, d in zip(start, out.delta)]
    delta = [tf.where(dropped, d, g - w)
             for d, g, w in zip(out.delta, global_trainable, local)]
    state = ([tf.where(dropped, p, w) for p, w in zip(previous, local)] +
             [tf.where(dropped, meta, new_meta)])
    return dataclasses.replace(out, delta=delta, client_state=state)


@ALGORITHMS.register("fedema", params=FedEmaParams)
def fedema(config: AlgorithmConfig, params: FedEmaParams) -> Algorithm:
  """FedEMA (Zhuang et al. 2022): divergence-aware local model EMA.

  Returning clients start from an EMA of their own model towards the
  global one, weighted by their divergence (`fedema_lambda`, or the
  autoscaler `fedema_tau`); made for federated BYOL (--objective=byol),
  trains any objective."""
  return Algorithm("fedema", FedEmaWork(config, params.fedema_lambda,
                                        params.fedema_tau), config.server)
