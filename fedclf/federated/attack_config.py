"""Which clients attack and how (`--malicious_fraction`, `--attack`, ...).

A fixed set of `malicious_fraction * num_clients` client ids, drawn once
from the run seed (`malicious_clients`), attacks whenever sampled. Update
attacks change a malicious client's model delta after its honest local
training, inside the client computation (`fedclf.federated.attacks`), so
every aggregator sees the attacked update on both backends:

  sign_flip       delta -> -attack_scale * delta
  scaled          delta -> +attack_scale * delta (model replacement's
                  boost, Bagdasaryan et al. 2020; e.g. clients_per_round)
  gaussian_noise  delta -> N(0, attack_noise_std^2) noise, seeded per round
                  and client
  label_flip      the client trains on labels y -> C - 1 - y (a data
                  attack: its update is honest for the wrong labels)

This module imports no TensorFlow: `SimulationConfig` holds an
`AttackConfig`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import List

import numpy as np

from fedclf.errors import UserError

ATTACKS = ("sign_flip", "scaled", "gaussian_noise", "label_flip")
# Mixed into the run seed so the malicious set is not the same draw as the
# partition's or the sampling's.
_MALICIOUS_STREAM = 0x0BAD


@dataclasses.dataclass(frozen=True)
class AttackConfig:
  malicious_fraction: float = 0.0  # share of all clients; 0 = no attack
  attack: str = "sign_flip"
  attack_scale: float = 10.0  # sign_flip and scaled
  attack_noise_std: float = 1.0  # gaussian_noise

  @property
  def active(self) -> bool:
    return self.malicious_fraction > 0

  @property
  def on_updates(self) -> bool:
    """Whether the attack changes the clients' deltas (not their data)."""
    return self.active and self.attack != "label_flip"

  @property
  def on_labels(self) -> bool:
    return self.active and self.attack == "label_flip"

  def validate(self) -> None:
    if not 0.0 <= self.malicious_fraction < 1.0:
      raise UserError(f"malicious_fraction must be in [0, 1), got "
                      f"{self.malicious_fraction}")
    if self.attack not in ATTACKS:
      raise UserError(f"unknown attack {self.attack!r}; choose one of: "
                      f"{', '.join(ATTACKS)}")
    if not self.attack_scale > 0 or self.attack_noise_std < 0:
      raise UserError(f"attack_scale must be > 0 and attack_noise_std >= 0, "
                      f"got {self.attack_scale} and {self.attack_noise_std}")


def malicious_clients(num_clients: int, fraction: float,
                      seed: int) -> List[int]:
  """The sorted ids of round(fraction * num_clients) malicious clients,
  the same for the same seed (and none for fraction 0)."""
  count = int(round(fraction * num_clients))
  if count <= 0:
    return []
  rng = np.random.default_rng([seed, _MALICIOUS_STREAM])
  return sorted(int(c) for c in rng.choice(num_clients, count,
                                           replace=False))


def write_malicious_clients(out_dir: str, sim) -> None:
  """`malicious_clients.json` in the run folder: the attack and the ids of
  the malicious clients of the `SimulationConfig` `sim` (nothing when no
  client attacks)."""
  attack = sim.attack
  if not attack.active:
    return
  # Deferred: fedclf.results imports more than this TF-free module needs.
  from fedclf.results.record import atomic_write_json  # pylint: disable=g-import-not-at-top
  atomic_write_json(os.path.join(out_dir, "malicious_clients.json"), {
      "attack": dataclasses.asdict(attack),
      "malicious_clients": malicious_clients(
          sim.num_clients, attack.malicious_fraction, sim.seed)})
