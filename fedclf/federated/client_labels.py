"""Which of each client's examples carry labels: the semi-supervised
setting of federated SSL papers (e.g. labels on 10% of each client's
images), where supervised federated training reads the labelled share only
and pretraining may read every image."""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

from fedclf.train.centralized import check_label_fraction

# The labelled choice's random stream: a four-number seed, which no
# three-number stream of rounds_lib.round_rng (rounds, held-out splits)
# can equal.
_LABEL_STREAM = 9000


def labelled_clients(clients: Sequence[np.ndarray], fraction: float,
                     seed: int) -> List[np.ndarray]:
  """Each client's labelled examples: round(fraction * n) of its n, at least
  one for a client that has any, chosen uniformly and seeded by (seed,
  client) so that the choice does not depend on the other clients' sizes.
  Sorted indices; fraction 1 keeps every example."""
  check_label_fraction(fraction)
  kept = []
  for cid, idx in enumerate(clients):
    idx = np.asarray(idx)
    if fraction >= 1.0 or len(idx) == 0:
      kept.append(np.sort(idx))
      continue
    n = max(1, int(round(fraction * len(idx))))
    rng = np.random.default_rng([seed, 0, _LABEL_STREAM, cid])
    order = rng.permutation(len(idx))
    kept.append(np.sort(idx[order[:n]]))
  return kept
