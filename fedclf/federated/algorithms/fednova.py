"""FedNova (Wang et al. 2020): normalized averaging, so that clients that
run more local steps do not pull the global model toward their optimum."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from fedclf.federated.algorithms.algorithm import Algorithm
from fedclf.federated.client_work import ClientOutput
from fedclf.federated.client_work import effective_steps
from fedclf.federated.client_work import LocalSGD
from fedclf.federated.config import AlgorithmConfig
from fedclf.plugin_config import NoParams
from fedclf.registry import ALGORITHMS


class FedNovaSGD(LocalSGD):
  """Local (momentum) SGD whose reported delta is normalized by the
  client's effective number of steps a_i (tau_i local steps without
  momentum, m(tau_i) with momentum rho, as `effective_steps`).

  The server applies tau_eff * sum_i p_i d_i / a_i with p_i = n_i / sum n
  and tau_eff = sum_i p_i a_i (Wang et al. 2020; NIID-Bench's rule). The
  example-weighted mean of the normalized deltas is the aggregator's own;
  tau_eff comes from the extra deltas [n_i a_i, n_i], whose unweighted
  means over the clients that trained have the ratio tau_eff (a dropped
  client reports zeros and weight 0, so it is in neither sum).
  """

  # The normalization is in `output`, not `train`, so that the local step
  # stays LocalSGD's and the batched backend (backends/batched.py), which
  # calls `output` per client, trains FedNova's clients as one computation.
  def output(self, global_trainable, global_non_trainable, local,
             non_trainable, totals, num_examples, client_state,
             server_extra) -> ClientOutput:
    out = super().output(global_trainable, global_non_trainable, local,
                         non_trainable, totals, num_examples, client_state,
                         server_extra)
    a = effective_steps(out.steps, self.momentum)
    return dataclasses.replace(
        out, delta=[d / a for d in out.delta],
        extra_delta=[out.weight * a, tf.identity(out.weight)])

  def server_delta(self, mean_delta, mean_extra_delta, server_extra,
                   participation):
    del server_extra, participation  # Unused.
    weighted_steps, weight = mean_extra_delta
    tau_eff = weighted_steps / tf.maximum(weight, 1e-12)
    return [tau_eff * d for d in mean_delta]


@ALGORITHMS.register("fednova")
def fednova(config: AlgorithmConfig, params: NoParams) -> Algorithm:
  """FedNova (Wang et al. 2020): each client's delta divided by its
  effective local steps, the mean rescaled by their weighted mean."""
  del params  # None to read.
  return Algorithm("fednova", FedNovaSGD(config), config.server)
