"""McMahan et al. (2017) "2NN": a two-hidden-layer perceptron."""

from __future__ import annotations

import tensorflow as tf

from fedclf.models import building_blocks
from fedclf.registry import MODELS

HIDDEN_UNITS = 200


@MODELS.register("mlp")
def build_mlp(input_shape: tuple[int, int, int], num_classes: int,
              config: building_blocks.ModelConfig) -> building_blocks.ModelParts:
  """Flatten, two Dense(200, relu) layers (the encoder), Dense head.

  199,210 parameters on 28x28x1 with 10 classes, as in the paper.
  """
  seeds = building_blocks.SeedStream(config.seed)
  inputs = building_blocks.image_input(input_shape)
  x = tf.keras.layers.Flatten(name="flatten")(inputs)
  for i in (1, 2):
    x = tf.keras.layers.Dense(
        building_blocks.scaled(HIDDEN_UNITS, config), activation="relu",
        kernel_initializer=seeds.glorot_uniform(), name=f"fc{i}")(x)
  return building_blocks.make_parts(inputs, x, num_classes, seeds, config=config)
