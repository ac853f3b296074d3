"""Aggregators usable with any algorithm (`--aggregator=`), one module each.

Each registers in `fedclf.registry.AGGREGATORS` a factory from its params
dataclass (fields become flags) to an `Aggregator`
(`fedclf.federated.aggregators`); `Simulation` puts the chosen one in place
of the algorithm's own (`with_aggregator`):

  mean          the example-weighted mean (FedAvg's; TFF: MeanFactory)
  median        coordinate-wise median (Yin et al. 2018)
  trimmed_mean  coordinate-wise mean without the `trim_fraction` largest
                and smallest values (Yin et al. 2018)
  krum          the update closest to its n - f - 2 nearest neighbours
  multi_krum    the mean of the `multi_krum_selected` best Krum scores
                (Blanchard et al. 2017; f = `byzantine_fraction` of n)
  norm_bound    each update clipped to L2 norm `clip_norm`, then the
                weighted mean (Sun et al. 2019; TFF: clipping_factory)
  centered_clip the previous round's aggregate moved by the mean of the
                updates' differences to it, each clipped to
                `centered_clip_radius` (Karimireddy et al. 2021); keeps
                that aggregate as state (`ServerState.aggregator`)

Dropped clients (weight 0) are no votes. The robust rules are unweighted:
a client cannot buy influence by claiming many examples. Rules without a
TFF form run on the tff backend too: its round returns the clients'
updates and the driver combines them (see backends/tff.py).
"""

from fedclf.federated.aggregation.choice import with_aggregator
# Imported to register them.
from fedclf.federated.aggregation import centered_clip
from fedclf.federated.aggregation import krum
from fedclf.federated.aggregation import mean
from fedclf.federated.aggregation import median
from fedclf.federated.aggregation import norm_bound
from fedclf.federated.aggregation import trimmed_mean

__all__ = ["with_aggregator", "centered_clip", "krum", "mean", "median",
           "norm_bound", "trimmed_mean"]
