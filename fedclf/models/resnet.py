"""CIFAR-style ResNets (He et al. 2016) with a choice of normalisation."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from fedclf.models import building_blocks
from fedclf.registry import MODELS


def _conv(filters: int, kernel: int, stride: int, config: building_blocks.ModelConfig,
          seeds: building_blocks.SeedStream, name: str) -> tf.keras.layers.Layer:
  # A bias right before a normalisation layer is cancelled by its centring.
  return tf.keras.layers.Conv2D(
      filters, kernel, strides=stride, padding="same",
      use_bias=config.norm == "none", kernel_initializer=seeds.he_normal(),
      name=name)


def _basic_block(x: tf.Tensor, filters: int, stride: int,
                 config: building_blocks.ModelConfig, seeds: building_blocks.SeedStream,
                 name: str) -> tf.Tensor:
  """conv3x3-norm-relu-conv3x3-norm plus shortcut, then relu."""
  y = _conv(filters, 3, stride, config, seeds, f"{name}_conv1")(x)
  y = building_blocks.norm_layer(config.norm, filters, f"{name}_norm1")(y)
  y = tf.keras.layers.ReLU(name=f"{name}_relu1")(y)
  y = _conv(filters, 3, 1, config, seeds, f"{name}_conv2")(y)
  y = building_blocks.norm_layer(config.norm, filters, f"{name}_norm2")(y)
  shortcut = x
  if stride != 1 or int(x.shape[-1]) != filters:
    # Projection shortcut (option B): it works with every norm choice and
    # needs no custom layer, unlike option A's zero-padding.
    shortcut = _conv(filters, 1, stride, config, seeds, f"{name}_proj")(x)
    shortcut = building_blocks.norm_layer(config.norm, filters,
                               f"{name}_proj_norm")(shortcut)
  y = tf.keras.layers.Add(name=f"{name}_add")([y, shortcut])
  return tf.keras.layers.ReLU(name=f"{name}_out")(y)


def _resnet(input_shape: tuple[int, int, int], num_classes: int,
            config: building_blocks.ModelConfig, stem_filters: int,
            stages: Sequence[tuple[int, int]]) -> building_blocks.ModelParts:
  """3x3 stem (no max-pool), basic-block stages, global average pooling.

  Args:
    input_shape: HxWxC.
    num_classes: number of logits.
    config: model options.
    stem_filters: filters of the stem convolution.
    stages: (filters, blocks) per stage; every stage after the first halves
      the resolution in its first block ('same' padding, so small inputs
      stop at 1x1 rather than vanishing).

  Returns:
    The encoder/head parts; features are the pooled last-stage channels.
  """
  seeds = building_blocks.SeedStream(config.seed)
  inputs = building_blocks.image_input(input_shape)
  stem = building_blocks.scaled(stem_filters, config)
  x = _conv(stem, 3, 1, config, seeds, "stem_conv")(inputs)
  x = building_blocks.norm_layer(config.norm, stem, "stem_norm")(x)
  x = tf.keras.layers.ReLU(name="stem_relu")(x)
  for s, (filters, blocks) in enumerate(stages, start=1):
    for b in range(1, blocks + 1):
      stride = 2 if (b == 1 and s > 1) else 1
      x = _basic_block(x, building_blocks.scaled(filters, config), stride, config, seeds,
                       f"stage{s}_block{b}")
  x = tf.keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
  return building_blocks.make_parts(inputs, x, num_classes, seeds, config=config)


@MODELS.register("resnet18")
def build_resnet18(input_shape: tuple[int, int, int], num_classes: int,
                   config: building_blocks.ModelConfig) -> building_blocks.ModelParts:
  """ResNet-18 for small images: 3x3 stem conv 64, no initial max-pool,
  [2, 2, 2, 2] basic blocks of 64/128/256/512 filters; 512 features."""
  return _resnet(input_shape, num_classes, config, 64,
                 [(64, 2), (128, 2), (256, 2), (512, 2)])


@MODELS.register("resnet20")
def build_resnet20(input_shape: tuple[int, int, int], num_classes: int,
                   config: building_blocks.ModelConfig) -> building_blocks.ModelParts:
  """CIFAR ResNet-20 (He et al. 2016, Sec. 4.2): 3 stages of 3 basic blocks
  with 16/32/64 filters; 64 features. Projection shortcuts add ~3k
  parameters over the paper's zero-padding shortcuts (0.27M)."""
  return _resnet(input_shape, num_classes, config, 16,
                 [(16, 3), (32, 3), (64, 3)])
