"""Per-round pieces every backend shares: who takes part, which batches each
client sees, and the server state with its checkpoint format.

All randomness of round r derives from (seed, r): a run resumed from a
checkpoint replays exactly the clients, dropouts and batches of the run it
continues.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from fedclf.errors import UnreadableCheckpointError
from fedclf.errors import UserError
from fedclf.results.checkpoint_setting import check_setting
from fedclf.results.checkpoint_setting import parse_setting_text
from fedclf.results.checkpoint_setting import resume_newest_readable
from fedclf.results.checkpoint_setting import setting_text
from fedclf.results.record import atomic_output

# Per-client state by client id (SCAFFOLD's c_i, ...).
ClientStates = Dict[int, List[np.ndarray]]

# Independent random streams per round.
_SAMPLE, _DROPOUT, _STRAGGLE, _NOISE = 1, 2, 3, 4


def round_rng(seed: int, round_num: int, stream: int) -> np.random.Generator:
  return np.random.default_rng([seed, round_num, stream])


def client_seed(seed: int, round_num: int, client: int) -> np.ndarray:
  """The [2] int64 seed of one client's local randomness in a round."""
  return np.asarray([seed % (2**31 - 1),
                     (round_num * 1_000_003 + client) % (2**31 - 1)],
                    np.int64)


def noise_seed(seed: int, round_num: int) -> Tuple[int, int]:
  """A stateless TF seed for the round's DP noise."""
  return (seed % (2**31 - 1), (round_num * 7919 + _NOISE) % (2**31 - 1))


@dataclasses.dataclass(frozen=True)
class RoundPlan:
  """The clients of one round: sampled, those that report, and stragglers'
  step budgets (fraction of their local work they finish)."""
  sampled: np.ndarray
  reporting: np.ndarray
  step_fraction: Dict[int, float]


def plan_round(seed: int, round_num: int, num_clients: int,
               clients_per_round: int, client_dropout: float,
               straggler_fraction: float) -> RoundPlan:
  sampled = np.sort(round_rng(seed, round_num, _SAMPLE).choice(
      num_clients, size=clients_per_round, replace=False))
  fails = round_rng(seed, round_num, _DROPOUT).random(len(sampled))
  reporting = sampled[fails >= client_dropout]
  straggle = round_rng(seed, round_num, _STRAGGLE)
  draws = straggle.random(len(reporting))
  fractions = straggle.uniform(0.1, 1.0, len(reporting))
  step_fraction = {
      int(c): float(f)
      for c, d, f in zip(reporting, draws, fractions)
      if d < straggler_fraction
  }
  return RoundPlan(sampled, reporting, step_fraction)


def local_steps(num_examples: int, epochs: int, batch_size: int) -> int:
  """Steps of `epochs` passes in batches (0 = the whole dataset at once)."""
  if num_examples == 0:
    return 0
  per_epoch = 1 if batch_size == 0 else math.ceil(num_examples / batch_size)
  return epochs * per_epoch


def client_batches(indices: np.ndarray, epochs: int, batch_size: int,
                   rng: np.random.Generator, max_steps: int,
                   shape: Tuple[int, int]) -> Tuple[np.ndarray, int]:
  """Example indices of each local step, padded with -1 to `shape`.

  Returns (matrix [steps, batch] int32, number of real steps). Each epoch
  is a fresh permutation; the last batch of an epoch may be short.
  """
  width = shape[1]
  rows = []
  for _ in range(epochs):
    order = rng.permutation(indices)
    step = len(order) if batch_size == 0 else batch_size
    for start in range(0, len(order), step):
      rows.append(order[start:start + step])
  if max_steps:
    rows = rows[:max_steps]
  matrix = np.full(shape, -1, np.int32)
  for r, row in enumerate(rows):
    matrix[r, :len(row)] = row[:width]
  return matrix, len(rows)


@dataclasses.dataclass
class ServerState:
  """The global model and everything the server carries between rounds."""
  trainable: List[np.ndarray]
  non_trainable: List[np.ndarray]
  optimizer: object  # nested dict/list of arrays; backend-specific layout
  extra: List[np.ndarray]  # algorithm-specific (SCAFFOLD: c)
  round_num: int = 0
  # The aggregator's state across rounds (centered clipping's last
  # aggregate); empty for the stateless rules.
  aggregator: List[np.ndarray] = dataclasses.field(default_factory=list)

  def model_weights(self) -> List[np.ndarray]:
    return list(self.trainable) + list(self.non_trainable)


def _flatten(state: ServerState, client_states: Dict[int, List[np.ndarray]]):
  arrays = {"round_num": np.asarray(state.round_num)}
  for group, values in (("trainable", state.trainable),
                        ("non_trainable", state.non_trainable),
                        ("optimizer", tf.nest.flatten(state.optimizer)),
                        ("extra", state.extra),
                        ("aggregator", state.aggregator)):
    for i, v in enumerate(values):
      arrays[f"{group}/{i}"] = np.asarray(v)
  for cid, values in client_states.items():
    for i, v in enumerate(values):
      arrays[f"client/{cid}/{i}"] = np.asarray(v)
  return arrays


def same_setup(saved_tag: str, tag: str) -> bool:
  """Whether a checkpoint's tag matches this run's. Tags written before they
  named the training objective (every run was supervised then) still match,
  so those runs resume."""
  return saved_tag == tag or tag == f"{saved_tag}/supervised"


class Checkpointer:
  """Atomic `round_NNNNN.npz` files holding the server state and all
  per-client state; keeps the newest `keep`.

  Each file also holds the setup tag of the run (algorithm, model, ...)
  and, when given, the run's `setting` (see
  `fedclf.results.checkpoint_setting`), both checked on restore.
  """

  def __init__(self, directory: str, keep: int = 2,
               setting: Optional[Mapping[str, Any]] = None):
    self.directory = directory
    self.keep = keep
    self.setting = setting

  def save(self, state: ServerState,
           client_states: Dict[int, List[np.ndarray]], tag: str) -> str:
    os.makedirs(self.directory, exist_ok=True)
    path = os.path.join(self.directory, f"round_{state.round_num:05d}.npz")
    with atomic_output(path) as tmp:
      np.savez(tmp, __tag__=np.asarray(tag),
               __setting__=np.asarray(setting_text(self.setting)),
               **_flatten(state, client_states))
    for old in self.list()[:-self.keep]:
      os.remove(old)
    return path

  def list(self) -> List[str]:
    if not os.path.isdir(self.directory):
      return []
    names = sorted(n for n in os.listdir(self.directory)
                   if re.fullmatch(r"round_\d+\.npz", n))
    return [os.path.join(self.directory, n) for n in names]

  def latest(self) -> Optional[str]:
    paths = self.list()
    return paths[-1] if paths else None

  def latest_readable(self) -> Optional[str]:
    """The newest checkpoint that reads whole (the one --resume would
    start from), skipping damaged newer ones; None when none reads."""
    for path in self.list()[::-1]:
      try:
        _read_npz(path)
      except UnreadableCheckpointError:
        continue
      return path
    return None

  def restore_latest(self, template: ServerState, tag: str
                     ) -> Optional[Tuple[str, ServerState, ClientStates]]:
    """(path, state, client_states) of the newest readable checkpoint (an
    unreadable newer one is skipped with a warning), or None when there is
    none. UserError when none can be read, or on another setup or
    setting."""
    found = resume_newest_readable(
        self.list()[::-1], lambda path: self.restore(path, template, tag))
    if found is None:
      return None
    path, (state, client_states) = found
    return path, state, client_states

  def restore(self, path: str, template: ServerState, tag: str
              ) -> Tuple[ServerState, ClientStates]:
    """Returns (state, client_states) shaped like `template`.

    Raises UnreadableCheckpointError when the file cannot be read whole,
    UserError when it is of another setup or setting.
    """
    data = _read_npz(path)
    saved_tag = str(data["__tag__"])
    if not same_setup(saved_tag, tag):
      raise UserError(
          f"checkpoint {path} was written by a different setup ({saved_tag})"
          f"; resume with the same algorithm, model and backend ({tag})")
    check_setting(path, parse_setting_text(
        path, str(data.get("__setting__", ""))), self.setting)
    try:
      return _unflatten(data, template)
    except (KeyError, ValueError) as e:
      raise UnreadableCheckpointError(
          f"checkpoint {path} lacks part of the state: {e}") from None


def _read_npz(path: str) -> Dict[str, np.ndarray]:
  """Every array of the checkpoint at `path`: a zip member's CRC is only
  checked when it is read, so all are read here, before any is used."""
  try:
    with np.load(path) as data:
      arrays = {key: data[key] for key in data.files}
  except Exception as e:  # pylint: disable=broad-except
    # Truncated or garbled: zipfile, zlib and numpy each raise their own.
    raise UnreadableCheckpointError(
        f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
  if "__tag__" not in arrays or "round_num" not in arrays:
    raise UnreadableCheckpointError(
        f"cannot read checkpoint {path}: it is not a round checkpoint")
  return arrays


def _unflatten(data: Dict[str, np.ndarray], template: ServerState
               ) -> Tuple[ServerState, ClientStates]:
  def group(name, count):
    return [data[f"{name}/{i}"] for i in range(count)]

  opt_flat = tf.nest.flatten(template.optimizer)
  state = ServerState(
      trainable=group("trainable", len(template.trainable)),
      non_trainable=group("non_trainable", len(template.non_trainable)),
      optimizer=tf.nest.pack_sequence_as(
          template.optimizer, group("optimizer", len(opt_flat))),
      extra=group("extra", len(template.extra)),
      round_num=int(data["round_num"]),
      # A checkpoint written before this field has no "aggregator/" arrays;
      # it still loads, as every aggregator then had no state.
      aggregator=group("aggregator", len(template.aggregator)))
  client_states: Dict[int, List] = {}
  for key in data:
    if key.startswith("client/"):
      _, cid, i = key.split("/")
      client_states.setdefault(int(cid), []).append((int(i), data[key]))
  return state, {cid: [v for _, v in sorted(values)]
                 for cid, values in client_states.items()}
