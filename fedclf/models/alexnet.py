"""AlexNet (Krizhevsky et al. 2012) scaled down for small images."""

from __future__ import annotations

import tensorflow as tf

from fedclf.models import building_blocks
from fedclf.registry import MODELS

# (filters, pool after this conv): the CIFAR-style variant's 3x3 convolutions
# with AlexNet's pooling after conv1, conv2 and conv5.
CONV_LAYERS = ((64, True), (192, True), (384, False), (256, False),
               (256, True))
DENSE_UNITS = (1024, 512)


@MODELS.register("alexnet")
def build_alexnet(input_shape: tuple[int, int, int], num_classes: int,
                  config: building_blocks.ModelConfig) -> building_blocks.ModelParts:
  """Five 3x3 conv layers, three pools, Dense 1024/512 encoder; Dense head.

  * Each conv is followed by `config.norm` (in place of the original local
    response normalisation, as in FedBN's AlexNet), then ReLU.
  * Pools are AlexNet's overlapping 3x3 stride-2 max pools with 'same'
    padding: the map shrinks to ceil(n / 2), so 8x8 inputs end at 1x1
    instead of collapsing to zero.
  * `config.dropout` goes before each dense layer, where the original has
    its dropout (0.5 there); not again before the head.
  The flattened conv output grows with the input: 3x3x256 on 28x28,
  4x4x256 on 32x32, so the first dense layer dominates the parameter count.
  """
  seeds = building_blocks.SeedStream(config.seed)
  inputs = building_blocks.image_input(input_shape)
  x = inputs
  for i, (filters, pool) in enumerate(CONV_LAYERS, start=1):
    filters = building_blocks.scaled(filters, config)
    x = tf.keras.layers.Conv2D(
        filters, 3, padding="same", use_bias=config.norm == "none",
        kernel_initializer=seeds.glorot_uniform(), name=f"conv{i}")(x)
    x = building_blocks.norm_layer(config.norm, filters, name=f"norm{i}")(x)
    x = tf.keras.layers.ReLU(name=f"relu{i}")(x)
    if pool:
      x = tf.keras.layers.MaxPool2D(3, strides=2, padding="same",
                                    name=f"pool{i}")(x)
  x = tf.keras.layers.Flatten(name="flatten")(x)
  for i, units in enumerate(DENSE_UNITS, start=6):
    if config.dropout > 0:
      x = tf.keras.layers.Dropout(config.dropout, name=f"dropout{i}")(x)
    x = tf.keras.layers.Dense(
        building_blocks.scaled(units, config), activation="relu",
        kernel_initializer=seeds.glorot_uniform(), name=f"fc{i}")(x)
  return building_blocks.make_parts(inputs, x, num_classes, seeds,
                                    head_dropout=0.0, config=config)
