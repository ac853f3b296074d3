"""The shared model zoo.

Every model is registered in `fedclf.registry.MODELS` and splits into an
encoder (image -> flat features) and a head (features -> logits):

    parts = build_model_parts("resnet20", (32, 32, 3), 10,
                              ModelConfig(norm="group"))
    model = build_classifier("cnn", (28, 28, 1), 10)

Registered: mlp, cnn, cnn_gap, lenet5, niid_bench_cnn, dann_cnn, alexnet,
resnet18, resnet20, efficientnet_b0.
All take float32 images [batch, H, W, C] of any size from 8x8 up, and build
deterministically from `ModelConfig.seed` (initialisers are seeded per
layer; the caller's global random state is never touched).

A plugin registers `builder(input_shape, num_classes, config) -> ModelParts`
with `@MODELS.register(name)`; `fedclf.models.building_blocks` has the helpers.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.models import building_blocks
# The family modules are imported for their @MODELS.register side effects.
from fedclf.models import alexnet  # noqa: F401
from fedclf.models import cnn  # noqa: F401
from fedclf.models import efficientnet  # noqa: F401
from fedclf.models import lenet  # noqa: F401
from fedclf.models import mlp  # noqa: F401
from fedclf.models import resnet  # noqa: F401
from fedclf.models.building_blocks import ModelConfig
from fedclf.models.building_blocks import ModelParts
from fedclf.models.building_blocks import NORMS
from fedclf.registry import MODELS

__all__ = [
    "ModelConfig", "ModelParts", "NORMS", "build_model_parts",
    "build_classifier", "count_params"
]


def build_model_parts(name: str,
                      input_shape: Sequence[int],
                      num_classes: int,
                      config: ModelConfig = ModelConfig()) -> ModelParts:
  """Builds the encoder and head of the registered model `name`.

  Args:
    name: a name registered in `fedclf.registry.MODELS`.
    input_shape: (height, width, channels) of one image, all positive.
    num_classes: number of logits, at least 2.
    config: architecture options and initialiser seed.

  Returns:
    The `ModelParts`; the encoder output is [batch, feature_dim] and the
    head output [batch, num_classes] logits.

  Raises:
    UnknownNameError: `name` is not registered (the message lists names).
    UserError: bad `input_shape`, `num_classes` or `config`.
  """
  builder = MODELS.get(name)
  shape = _check_input_shape(input_shape)
  _check_num_classes(num_classes)
  if not isinstance(config, ModelConfig):
    raise TypeError(f"config must be a ModelConfig, got {type(config)}")
  parts = builder(shape, int(num_classes), config)
  _check_parts(name, parts, shape, int(num_classes))
  if config.weight_init == "pytorch":
    building_blocks.pytorch_default_init(parts, config.seed)
  return parts


def build_classifier(name: str,
                     input_shape: Sequence[int],
                     num_classes: int,
                     config: ModelConfig = ModelConfig()) -> tf.keras.Model:
  """The model `name` as one Keras model: image -> logits (no softmax).

  The encoder and head are nested layers named "encoder" and "head", so
  `model.get_layer("encoder")` recovers the feature extractor (e.g. for a
  linear probe) and its weights stay shared with the classifier.

  Args and raises: as `build_model_parts`.
  """
  parts = build_model_parts(name, input_shape, num_classes, config)
  inputs = tf.keras.Input(shape=parts.encoder.input_shape[1:],
                          dtype=tf.float32, name="image")
  logits = parts.head(parts.encoder(inputs))
  return tf.keras.Model(inputs, logits, name=name)


def count_params(model: tf.keras.Model, *, trainable_only: bool = False) -> int:
  """Number of scalar weights of `model`, each shared variable once.

  By default counts non-trainable weights too (BatchNorm moving statistics),
  like Keras' `Model.count_params`.
  """
  variables = model.trainable_weights if trainable_only else model.weights
  seen = set()
  total = 0
  for variable in variables:
    if id(variable) in seen:
      continue
    seen.add(id(variable))
    total += int(variable.shape.num_elements())
  return total


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_input_shape(input_shape) -> tuple[int, int, int]:
  try:
    dims = tuple(input_shape)
  except TypeError:
    dims = None
  if (dims is None or len(dims) != 3 or
      not all(_is_int(d) and d > 0 for d in dims)):
    raise UserError("input shape must be 3 positive integers (height, width, "
                    f"channels), got {input_shape!r}")
  return tuple(int(d) for d in dims)


def _check_num_classes(num_classes) -> None:
  if not _is_int(num_classes) or num_classes < 2:
    raise UserError(f"number of classes must be an integer >= 2, got "
                    f"{num_classes!r}")


def _check_parts(name: str, parts: ModelParts, shape: tuple[int, int, int],
                 num_classes: int) -> None:
  """Catches a (plugin) builder that breaks the encoder/head contract."""
  # Plain ValueError, not UserError: this is a bug in the builder, and its
  # traceback should survive the binaries' one-line error handling.
  if not isinstance(parts, ModelParts):
    raise ValueError(f"model {name!r} builder returned {type(parts)}, "
                     "not ModelParts")
  encoder_in = tuple(parts.encoder.input_shape[1:])
  encoder_out = tuple(parts.encoder.output_shape)
  head_out = tuple(parts.head.output_shape)
  if encoder_in != shape:
    raise ValueError(f"model {name!r}: encoder input {encoder_in} != {shape}")
  if len(encoder_out) != 2 or encoder_out[1] != parts.feature_dim:
    raise ValueError(f"model {name!r}: encoder output {encoder_out} is not "
                     f"(None, feature_dim={parts.feature_dim})")
  if head_out != (None, num_classes):
    raise ValueError(f"model {name!r}: head output {head_out} != "
                     f"(None, {num_classes})")
