"""McMahan et al. (2017) MNIST CNN, the FedAvg paper's standard model."""

from __future__ import annotations

import tensorflow as tf

from fedclf.models import building_blocks
from fedclf.registry import MODELS


@MODELS.register("cnn")
def build_cnn(input_shape: tuple[int, int, int], num_classes: int,
              config: building_blocks.ModelConfig) -> building_blocks.ModelParts:
  """conv5x5(32)-pool-conv5x5(64)-pool-Dense(512) encoder, Dense head.

  1,663,370 parameters on 28x28x1 with 10 classes, as in the paper. Pools
  use 'same' padding: identical to 'valid' on even sizes, and odd or tiny
  inputs (8x8 digits, 1x1) round up instead of collapsing to zero.
  """
  seeds = building_blocks.SeedStream(config.seed)
  inputs = building_blocks.image_input(input_shape)
  x = inputs
  for i, filters in enumerate((32, 64), start=1):
    x = tf.keras.layers.Conv2D(
        building_blocks.scaled(filters, config), 5, padding="same", activation="relu",
        kernel_initializer=seeds.glorot_uniform(), name=f"conv{i}")(x)
    x = tf.keras.layers.MaxPool2D(2, padding="same", name=f"pool{i}")(x)
  x = tf.keras.layers.Flatten(name="flatten")(x)
  x = tf.keras.layers.Dense(
      building_blocks.scaled(512, config), activation="relu",
      kernel_initializer=seeds.glorot_uniform(), name="fc")(x)
  return building_blocks.make_parts(inputs, x, num_classes, seeds, config=config)
