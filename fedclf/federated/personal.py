"""Personalization's shared parts: each client's own held-out test split,
which of a model's variables are personal (the head, the BatchNorm layers),
and binding a personal algorithm's client work to the model's layout.

A personalized algorithm keeps part of the model on each client (client
state, checkpointed by the round loop) and says how a client's personal
model is made from the global one (`personalize`); the evaluator scores it
on the client's own test part (`evaluation.ClassificationEvaluator`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.federated import rounds as rounds_lib

# The random stream of the held-out split (rounds_lib.round_rng's third
# number), apart from the streams of the rounds' own choices.
_SPLIT_STREAM = 7000


def split_clients(clients: Sequence[np.ndarray], fraction: float, seed: int
                  ) -> Tuple[List[np.ndarray], List[np.ndarray]]:
  """Each client's example indices split, seeded by (seed, client), into a
  training part and a test part of floor(fraction * n) examples; every
  client keeps at least one training example. Both parts sorted."""
  train, test = [], []
  for cid, idx in enumerate(clients):
    idx = np.asarray(idx)
    n_test = min(int(fraction * len(idx)), max(len(idx) - 1, 0))
    order = rounds_lib.round_rng(seed, 0, _SPLIT_STREAM + cid).permutation(
        len(idx))
    test.append(np.sort(idx[order[:n_test]]))
    train.append(np.sort(idx[order[n_test:]]))
  return train, test


@dataclasses.dataclass(frozen=True)
class PersonalMask:
  """Which of a model's trainable and non-trainable variables (in the order
  the backends read them) stay on the client."""
  trainable: Tuple[bool, ...]
  non_trainable: Tuple[bool, ...]


def _refs(variables) -> set:
  return {v.ref() for v in variables}


def _mask(variables, personal: set) -> Tuple[bool, ...]:
  return tuple(v.ref() in personal for v in variables)


def head_mask(model: tf.keras.Model) -> PersonalMask:
  """The head's variables (the zoo's classifiers are an "encoder" and a
  "head" layer, see fedclf.models.build_classifier)."""
  try:
    head = model.get_layer("head")
  except ValueError:
    raise UserError(f"model {model.name!r} has no layer named 'head'; a "
                    f"personal head needs a zoo classifier (supervised "
                    f"objective)") from None
  personal = _refs(head.variables)
  return PersonalMask(_mask(model.trainable_variables, personal),
                      _mask(model.non_trainable_variables, personal))


def batch_norm_mask(model: tf.keras.Model) -> PersonalMask:
  """Every BatchNormalization layer's variables (scale, offset and moving
  statistics)."""
  personal = set()
  for layer in model.submodules:
    if isinstance(layer, tf.keras.layers.BatchNormalization):
      personal |= _refs(layer.variables)
  if not personal:
    raise UserError(f"model {model.name!r} has no BatchNorm layer; FedBN "
                    f"needs --norm=batch")
  return PersonalMask(_mask(model.trainable_variables, personal),
                      _mask(model.non_trainable_variables, personal))


def pick(values: Sequence, mask: Sequence[bool]) -> list:
  """The entries of `values` where `mask` is true."""
  return [v for v, m in zip(values, mask) if m]


def merge(values: Sequence, personal: Sequence, mask: Sequence[bool]
          ) -> list:
  """`values` with the masked entries replaced, in order, by `personal`."""
  personal = iter(personal)
  return [next(personal) if m else v for v, m in zip(values, mask)]


def bind_to_model(algorithm, model_fn: Callable[[], tf.keras.Model]):
  """The algorithm with its client work told the model's layout, if the
  work asks for it (`with_model`): a personal work's client state holds
  some of the model's variables, and the backends need its shapes before
  any client trains. `algorithm` is an `algorithms.Algorithm`."""
  with_model = getattr(algorithm.client_work, "with_model", None)
  if with_model is None:
    return algorithm
  return dataclasses.replace(algorithm, client_work=with_model(model_fn()))
