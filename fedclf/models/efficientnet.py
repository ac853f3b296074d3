"""EfficientNet-B0 (Tan & Le 2019) from keras.applications, random init."""

from __future__ import annotations

import copy
import functools
from typing import Any, Dict, Tuple

import tensorflow as tf

from fedclf.errors import UserError
from fedclf.models import building_blocks
from fedclf.registry import MODELS

# keras.applications refuses EfficientNet inputs smaller than this.
MIN_SIDE = 32
# Keras' EfficientNet starts with Rescaling(1/255) and Normalization layers
# meant for raw [0, 255] pixels; fedclf feeds already-normalised floats.
_PREPROCESSING_LAYERS = ("Rescaling", "Normalization")


@MODELS.register("efficientnet_b0")
def build_efficientnet_b0(input_shape: tuple[int, int, int], num_classes: int,
                          config: building_blocks.ModelConfig) -> building_blocks.ModelParts:
  """EfficientNet-B0 feature extractor (1280 features) and a Dense head.

  The encoder takes the images callers have: inputs smaller than 32 on a
  side are resized up (bilinear) to at least 32, and 1-channel images are
  tiled to 3 channels; other channel counts pass through unchanged.

  TF 2.14's EfficientNetB0 has no `include_preprocessing` switch and always
  begins with Rescaling(1/255) and a Normalization layer (identity without
  ImageNet weights, but carrying an int64 `count` weight that weight
  averaging chokes on). Both are removed, so normalised inputs reach the
  stem conv unchanged. BatchNorm layers keep Keras' settings with
  norm="batch", become GroupNorm with norm="group" and identity with
  norm="none". `config.dropout` goes before the head (Keras' own top
  dropout is part of the excluded top). `width_multiplier` must be 1.0.
  """
  if config.width_multiplier != 1.0:
    raise UserError("efficientnet_b0 supports only width_multiplier=1.0, got "
                    f"{config.width_multiplier}")
  seeds = building_blocks.SeedStream(config.seed)
  height, width, channels = input_shape
  inputs = building_blocks.image_input(input_shape)
  x = inputs
  side_h, side_w = max(height, MIN_SIDE), max(width, MIN_SIDE)
  if (side_h, side_w) != (height, width):
    x = tf.keras.layers.Resizing(side_h, side_w, interpolation="bilinear",
                                 name="resize")(x)
  if channels == 1:
    x = tf.keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
  backbone = _backbone((side_h, side_w, int(x.shape[-1])), config.norm, seeds)
  features = backbone(x)
  return building_blocks.make_parts(inputs, features, num_classes, seeds, config=config)


def _backbone(shape: Tuple[int, int, int], norm: str,
              seeds: building_blocks.SeedStream) -> tf.keras.Model:
  """EfficientNetB0 rebuilt from its config with fedclf's changes.

  Editing the functional config and rebuilding is used rather than
  `tf.keras.models.clone_model` with a `clone_function`: on this model the
  clone did not finish within ten minutes on TF 2.14.
  """
  reference, bn_channels = _reference_config(shape)
  model_config = copy.deepcopy(reference)
  for layer in model_config["layers"]:
    class_name = layer["class_name"]
    name = layer["config"]["name"]
    if class_name in _PREPROCESSING_LAYERS:
      _replace(layer, "Identity", {"name": name})
    elif class_name == "BatchNormalization" and norm == "group":
      _replace(layer, "GroupNormalization", {
          "name": name,
          "groups": building_blocks.group_count(bn_channels[name]),
          "epsilon": layer["config"]["epsilon"],
      })
    elif class_name == "BatchNormalization" and norm == "none":
      _replace(layer, "Identity", {"name": name})
    _seed_initializers(layer["config"], seeds)
  return tf.keras.Model.from_config(model_config)


def _replace(layer: Dict[str, Any], class_name: str,
             config: Dict[str, Any]) -> None:
  """Turns a functional-config layer entry into a built-in `class_name`."""
  layer["class_name"] = class_name
  layer["module"] = "keras.layers"
  layer["registered_name"] = None
  layer["config"] = dict(config, trainable=True, dtype="float32")


def _seed_initializers(layer_config: Dict[str, Any],
                       seeds: building_blocks.SeedStream) -> None:
  """Gives every random initialiser of a layer its own seed.

  Keras' EfficientNet uses unseeded VarianceScaling initialisers; seeding
  them in layer order makes builds reproducible like the other models.
  """
  for key, value in layer_config.items():
    if (key.endswith("_initializer") and isinstance(value, dict) and
        "seed" in value.get("config", {})):
      value["config"]["seed"] = seeds.next_seed()


@functools.lru_cache(maxsize=8)
def _reference_config(
    shape: Tuple[int, int, int]) -> Tuple[Dict[str, Any], Dict[str, int]]:
  """Keras' EfficientNetB0 config and BatchNorm widths for one input shape.

  Building the reference model is the slow part (seconds), so it is done
  once per shape; callers must deepcopy the returned config before editing.
  """
  model = tf.keras.applications.EfficientNetB0(
      include_top=False, weights=None, input_shape=shape, pooling="avg")
  bn_channels = {
      layer.name: int(layer.input_shape[-1])
      for layer in model.layers
      if isinstance(layer, tf.keras.layers.BatchNormalization)
  }
  return model.get_config(), bn_channels
