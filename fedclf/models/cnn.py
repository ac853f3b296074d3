"""McMahan et al. (2017) MNIST CNN, the FedAvg paper's standard model, and
cnn_gap, a small conv encoder with pooled features for SSL pretraining."""

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


# conv3x3 widths of cnn_gap; a 2x2 max-pool follows every block but the last.
_GAP_WIDTHS = (32, 64, 128, 256)


@MODELS.register("cnn_gap")
def build_cnn_gap(input_shape: tuple[int, int, int], num_classes: int,
                  config: building_blocks.ModelConfig
                  ) -> building_blocks.ModelParts:
  """conv3x3-norm-relu blocks of 32/64/128/256 filters, max-pools between
  them, global average pooling: 256 features, Dense head.

  The small conv encoder for self-supervised pretraining on CPU budgets
  (about the zoo CNN's multiply-adds, 0.39M parameters on 28x28x1). Its
  features are pooled conv channels, as the ResNets' are and as SSL probes
  are usually read (SimCLR, Chen et al. 2020), instead of the zoo CNN's
  wide Dense layer, whose random projection of the pixels is already a
  strong linear feature and so hides what pretraining buys.
  """
  seeds = building_blocks.SeedStream(config.seed)
  inputs = building_blocks.image_input(input_shape)
  x = inputs
  for i, filters in enumerate(_GAP_WIDTHS, start=1):
    width = building_blocks.scaled(filters, config)
    x = tf.keras.layers.Conv2D(
        width, 3, padding="same", use_bias=config.norm == "none",
        kernel_initializer=seeds.he_normal(), name=f"conv{i}")(x)
    x = building_blocks.norm_layer(config.norm, width, f"norm{i}")(x)
    x = tf.keras.layers.ReLU(name=f"relu{i}")(x)
    if i < len(_GAP_WIDTHS):
      x = tf.keras.layers.MaxPool2D(2, padding="same", name=f"pool{i}")(x)
  x = tf.keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
  return building_blocks.make_parts(inputs, x, num_classes, seeds,
                                    config=config)
