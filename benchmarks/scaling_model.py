"""A model of a FedAvg round's time over W workers, for results/scaling.md.

Round time = latency + serial + max(driver, compute, network), where
  driver  = the driver's CPU seconds per sampled client x clients
            (planning, serializing, shipping, dispatching);
  compute = worker CPU seconds per client x ceil(clients / W) (clients are
            split evenly; a worker is one core, and the slowest share sets
            the pace);
  network = (bytes per client x clients + bytes per worker x
            min(W, clients)) x 8 / bandwidth (every byte passes the
            driver's one link; a worker without clients is sent nothing);
  serial  = seconds per client that nothing overlaps (fitted to what the
            other terms leave unexplained; on the one-TFF-client-per-client
            path, the merges of a round split into slices);
  latency = per-round waiting not explained by CPU (round trips, gRPC).
The driver, compute and network terms overlap (the driver streams clients
to workers while others train), so the largest one sets the round's pace;
serial and latency add to it. Assumptions: one
core per worker, identical cores, clients of equal size, the driver on a
machine of its own, no stragglers, bandwidth fully usable.
"""

import dataclasses
import math
from typing import Optional, Sequence, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class ScalingModel:
  driver_s_per_client: float
  worker_s_per_client: float
  bytes_per_client: float
  bytes_per_worker: float = 0.0
  latency_s: float = 0.0
  serial_s_per_client: float = 0.0


def round_terms(model: ScalingModel, workers: int, clients: int,
                gbit_per_s: float) -> dict:
  """The driver, compute and network seconds of one round."""
  wire = (model.bytes_per_client * clients +
          model.bytes_per_worker * min(workers, clients))
  return {"driver": model.driver_s_per_client * clients,
          "compute": model.worker_s_per_client * math.ceil(clients / workers),
          "network": wire * 8 / (gbit_per_s * 1e9)}


def round_seconds(model: ScalingModel, workers: int, clients: int,
                  gbit_per_s: float) -> float:
  """Predicted seconds of one round of `clients` clients on `workers`."""
  return (model.latency_s + model.serial_s_per_client * clients + max(
      round_terms(model, workers, clients, gbit_per_s).values()))


def bottleneck(model: ScalingModel, workers: int, clients: int,
               gbit_per_s: float) -> str:
  """Which term sets the round's pace ("driver", "compute", "network")."""
  terms = round_terms(model, workers, clients, gbit_per_s)
  return max(terms, key=terms.get)


def bottleneck_clients(model: ScalingModel, workers: int, gbit_per_s: float,
                       max_clients: int = 100000) -> Optional[Tuple[int, str]]:
  """The fewest clients per round at which the driver or the network is
  slower than the workers' compute (with what), or None up to
  `max_clients`. Below it, adding clients costs worker time only."""
  for clients in range(1, max_clients + 1):
    terms = round_terms(model, workers, clients, gbit_per_s)
    limit = max(("driver", "network"), key=terms.get)
    if terms[limit] > terms["compute"]:
      return clients, limit
  return None


def fit_bytes(points: Sequence[Tuple[int, int, float]]) -> Tuple[float, float]:
  """(bytes per client, bytes per worker) fitted by least squares to
  (workers, clients, bytes per round) points, each clipped at 0."""
  a = np.array([[c, w] for w, c, _ in points], dtype=float)
  b = np.array([v for _, _, v in points], dtype=float)
  per_client, per_worker = np.linalg.lstsq(a, b, rcond=None)[0]
  return max(float(per_client), 0.0), max(float(per_worker), 0.0)
