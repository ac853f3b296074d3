"""LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, NIID-Bench's
unpadded variant of it, and Ganin et al.'s DANN network of the same shape
for MNIST and MNIST-M."""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from fedclf.models import building_blocks
from fedclf.registry import MODELS

KERNEL = 5
# LeNet-5 was designed for 32x32 inputs (28x28 MNIST digits padded by 2).
DESIGN_SIDE = 32


@MODELS.register("lenet5")
def build_lenet5(input_shape: tuple[int, int, int], num_classes: int,
                 config: building_blocks.ModelConfig) -> building_blocks.ModelParts:
  """conv(6)-pool-conv(16)-pool-Dense(120)-Dense(84) encoder, Dense head.

  Padding reproduces the original geometry where the input allows it and
  degrades gracefully where it does not:
    * conv1 is 'valid' only on inputs of at least 32x32; smaller inputs are
      'same'-padded, which for 28x28 MNIST is exactly the customary pad-by-2
      (28 -> 28 -> 14 -> 10 -> 5: the paper's 5x5x16 = 400 features).
    * conv2 is 'valid' only if its output stays at least 5x5 as in the
      paper; on 16x16 or 8x8 inputs it is 'same' so the model still works.
    * pools are 'same' so odd sizes round up instead of collapsing.
  """
  def valid(i: int, side: int) -> bool:
    if i == 1:
      return side >= DESIGN_SIDE
    return side - KERNEL + 1 >= 2 * KERNEL

  seeds = building_blocks.SeedStream(config.seed)
  inputs = building_blocks.image_input(input_shape)
  x = _conv_pool_dense(inputs, seeds, config, (6, 16), valid, (120, 84))
  return building_blocks.make_parts(inputs, x, num_classes, seeds, config=config)


@MODELS.register("niid_bench_cnn")
def build_niid_bench_cnn(input_shape: tuple[int, int, int], num_classes: int,
                         config: building_blocks.ModelConfig
                         ) -> building_blocks.ModelParts:
  """lenet5's layers with unpadded convolutions: NIID-Bench's MNIST CNN.

  The CNN of NIID-Bench's code (Li et al. 2022; also Flower's niid_bench
  baseline) for MNIST-sized images. Its convolutions are unpadded wherever
  the input allows (28x28: 28 -> 24 -> 12 -> 8 -> 4, so 4x4x16 = 256
  features feed Dense(120), where lenet5 pads to LeNet's 32x32 geometry
  and has 400). A convolution whose input is under 10x10 gets 'same'
  padding, so the model still builds on 8x8 digits.
  """
  seeds = building_blocks.SeedStream(config.seed)
  inputs = building_blocks.image_input(input_shape)
  x = _conv_pool_dense(inputs, seeds, config, (6, 16),
                       lambda i, side: side >= 2 * KERNEL, (120, 84))
  return building_blocks.make_parts(inputs, x, num_classes, seeds, config=config)


@MODELS.register("dann_cnn")
def build_dann_cnn(input_shape: tuple[int, int, int], num_classes: int,
                   config: building_blocks.ModelConfig
                   ) -> building_blocks.ModelParts:
  """Ganin et al. (2016, JMLR 17(59), section 5.2.2)'s network for MNIST and
  MNIST-M: conv(32)-pool-conv(48)-pool, then Dense(100)-Dense(100) in the
  encoder (their label predictor's hidden layers) and a Dense head.

  On 28x28 inputs both convolutions are 'valid' as in the paper (28 -> 24
  -> 12 -> 8 -> 4: 4x4x48 = 768 features at `flatten`, where their domain
  classifier reads: `--dann_feature_layer=flatten --dann_hidden=100`);
  smaller inputs are 'same'-padded. It has 10x LeNet-5's convolution
  arithmetic: LeNet-5's two small convolutions cannot make their features
  domain-invariant on MNIST -> MNIST-M (results/domain_adaptation).
  """
  seeds = building_blocks.SeedStream(config.seed)
  inputs = building_blocks.image_input(input_shape)
  paper_size = min(input_shape[0], input_shape[1]) >= 28
  x = _conv_pool_dense(inputs, seeds, config, (32, 48),
                       lambda i, side: paper_size, (100, 100))
  return building_blocks.make_parts(inputs, x, num_classes, seeds, config=config)


def _conv_pool_dense(x: tf.Tensor, seeds: building_blocks.SeedStream,
                     config: building_blocks.ModelConfig,
                     filters: Sequence[int],
                     valid: Callable[[int, int], bool],
                     units: Sequence[int]) -> tf.Tensor:
  """5x5 conv (ReLU) then 2x2 max pool per entry of `filters`, flatten,
  then a ReLU Dense layer per entry of `units`. `valid(i, side)` says
  whether conv i (from 1) on an input of that side is 'valid'-padded
  (else 'same'); pools are 'same', so odd sizes round up."""
  for i, width in enumerate(filters, start=1):
    side = min(int(x.shape[1]), int(x.shape[2]))
    x = tf.keras.layers.Conv2D(
        building_blocks.scaled(width, config), KERNEL,
        padding="valid" if valid(i, side) else "same", activation="relu",
        kernel_initializer=seeds.glorot_uniform(), name=f"conv{i}")(x)
    x = tf.keras.layers.MaxPool2D(2, padding="same", name=f"pool{i}")(x)
  x = tf.keras.layers.Flatten(name="flatten")(x)
  for i, width in enumerate(units, start=1):
    x = tf.keras.layers.Dense(
        building_blocks.scaled(width, config), activation="relu",
        kernel_initializer=seeds.glorot_uniform(), name=f"fc{i}")(x)
  return x
