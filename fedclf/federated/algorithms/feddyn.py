"""FedDyn (Acar et al. 2021): federated learning with dynamic
regularization, so that the clients' local optima agree with the global
one at a fixed point."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.config import AlgorithmConfig
from fedclf.registry import ALGORITHMS


@dataclasses.dataclass(frozen=True)
class FedDynParams:
  feddyn_alpha: float = dataclasses.field(
      default=0.01, metadata={"help": "FedDyn's regularization weight "
                                      "alpha (the paper's code: 0.01)."})

  def validate(self) -> None:
    if self.feddyn_alpha <= 0:
      raise UserError(
          f"feddyn_alpha must be > 0, got {self.feddyn_alpha}")


class FedDynSGD(LocalSGD):
  """FedDyn's client and server steps.

  Client i keeps g_i (its last gradient at its local optimum, zeros before
  its first round) and minimizes L_i(w) - <g_i, w> + alpha/2 |w - w_g|^2
  (FedProx's proximal term with mu = alpha, plus the correction -g_i on
  every gradient); afterwards g_i <- g_i - alpha (w_i - w_g). The server
  keeps h (zeros at first): h <- h - alpha (1/N) sum_{i in P} (w_i - w_g)
  for the N clients and the round's participants P, and the new model is
  mean_{i in P} w_i - h / alpha.

  Both means are unweighted over the clients that trained, as in the paper
  (Algorithm 1) and its code: the fixed-point argument (h = the mean of
  the clients' g_i, so the server's step is consistent with the clients')
  needs the model mean and h's update to weigh clients alike, so each
  client reports weight 1 (0 if dropped) instead of its example count.
  The clients' deltas double as the extra deltas that move h.
  """

  stateful = True

  def __init__(self, config: AlgorithmConfig, alpha: float):
    super().__init__(config, prox_mu=alpha)
    self.alpha = float(alpha)

  def initial_client_state(self, trainable):
    return [tf.zeros_like(w) for w in trainable]

  def initial_server_extra(self, trainable):
    return [tf.zeros_like(w) for w in trainable]

  def gradient_correction(self, client_state, server_extra):
    del server_extra  # h only moves the server's model.
    return [-g for g in client_state]

  def finish(self, global_trainable, local_trainable, steps, client_state,
             server_extra):
    del steps, server_extra  # Unused.
    delta = [g - l for g, l in zip(global_trainable, local_trainable)]
    new_state = [gi + self.alpha * d for gi, d in zip(client_state, delta)]
    return delta, new_state

  def train(self, model, velocity, global_trainable, global_non_trainable,
            batches, num_examples, client_state, server_extra, seed):
    out = super().train(model, velocity, global_trainable,
                        global_non_trainable, batches, num_examples,
                        client_state, server_extra, seed)
    return dataclasses.replace(out, weight=1.0 - out.dropped)

  def update_server_extra(self, extra, mean_extra_delta, participation):
    # mean_extra_delta = mean_{i in P} (w_g - w_i).
    return [h + self.alpha * participation * d
            for h, d in zip(extra, mean_extra_delta)]

  def server_delta(self, mean_delta, mean_extra_delta, server_extra,
                   participation):
    # w_g - (mean w_i - h'/alpha) = mean delta + h'/alpha.
    h = self.update_server_extra(server_extra, mean_extra_delta,
                                 participation)
    return [d + hi / self.alpha for d, hi in zip(mean_delta, h)]


@ALGORITHMS.register("feddyn", params=FedDynParams)
def feddyn(config: AlgorithmConfig, params: FedDynParams) -> Algorithm:
  """FedDyn (Acar et al. 2021): dynamic regularization (`feddyn_alpha`)."""
  return Algorithm("feddyn", FedDynSGD(config, params.feddyn_alpha),
                   config.server)
