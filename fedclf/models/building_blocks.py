"""Shared pieces of the model zoo: config, parts, seeded layers, heads.

Every builder in `fedclf.models` splits a classifier into an *encoder*
(image -> flat feature vector) and a *head* (features -> logits), because
federated and self-supervised methods treat the two differently (personalised
heads, linear probes, projection heads on the encoder output, ...).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Optional

import numpy as np
import tensorflow as tf

from fedclf.errors import UserError

NORMS = ("batch", "group", "none")
# "keras": each builder's own initialisers (Glorot uniform or He normal
# kernels, zero biases). "pytorch": PyTorch's defaults for nn.Conv2d and
# nn.Linear, kernel and bias uniform in +-1/sqrt(fan_in), for comparing with
# results published from PyTorch code (NIID-Bench and Flower's baselines).
WEIGHT_INITS = ("keras", "pytorch")

# PyTorch's BatchNorm defaults (momentum 0.1 there == 0.9 here, eps 1e-5):
# the CIFAR reference ResNets were trained with them, and with the few local
# steps of a federated round Keras' 0.99 leaves the moving statistics
# dominated by the random initial state.
BN_MOMENTUM = 0.9
NORM_EPSILON = 1e-5

# Wu & He (2018) use 32 groups; narrower layers get fewer (see group_count).
MAX_GROUPS = 32


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture options shared by all models.

  Attributes:
    norm: "batch", "group" or "none": the normalisation layer of the models
      that have one (resnets, alexnet, efficientnet). GroupNorm matters
      because BatchNorm statistics are skewed under non-IID federation.
    dropout: dropout rate before the head, or in the dense layers of
      architectures that have dropout there originally (alexnet).
    width_multiplier: scales every hidden width / filter count (not the
      feature extractor of efficientnet_b0, which only supports 1.0).
    seed: seeds the weight initialisers, so the same config builds the same
      initial weights. It does not seed dropout masks.
    standardize_features: the head starts with a fixed per-feature
      standardization (`FeatureStandardization`), identity until its
      statistics are set: a pretrained encoder's statistics
      (`fedclf.models.pretrained`).
    weight_init: "keras" or "pytorch" (`WEIGHT_INITS`): the initial
      distribution of every kernel and bias of the encoder and head
      (`pytorch_default_init`); normalization layers start at scale 1 and
      offset 0 under both.
  """
  norm: str = "batch"
  dropout: float = 0.0
  width_multiplier: float = 1.0
  seed: int = 0
  standardize_features: bool = False
  weight_init: str = "keras"

  def __post_init__(self):
    if self.norm not in NORMS:
      raise UserError(
          f"unknown norm {self.norm!r}; choose one of: {', '.join(NORMS)}")
    if (isinstance(self.dropout, bool) or
        not isinstance(self.dropout, numbers.Real) or
        not 0.0 <= self.dropout < 1.0):
      raise UserError(f"dropout must be in [0, 1), got {self.dropout!r}")
    if (isinstance(self.width_multiplier, bool) or
        not isinstance(self.width_multiplier, numbers.Real) or
        not math.isfinite(self.width_multiplier) or
        self.width_multiplier <= 0):
      raise UserError(
          f"width_multiplier must be positive, got {self.width_multiplier!r}")
    if (isinstance(self.seed, bool) or
        not isinstance(self.seed, numbers.Integral) or self.seed < 0):
      raise UserError(
          f"seed must be a non-negative integer, got {self.seed!r}")
    if not isinstance(self.standardize_features, bool):
      raise UserError("standardize_features must be a bool, got "
                      f"{self.standardize_features!r}")
    if self.weight_init not in WEIGHT_INITS:
      raise UserError(f"unknown weight_init {self.weight_init!r}; choose one "
                      f"of: {', '.join(WEIGHT_INITS)}")


@dataclasses.dataclass
class ModelParts:
  """A classifier split into encoder and head.

  Attributes:
    encoder: image [batch, H, W, C] -> features [batch, feature_dim].
    head: features [batch, feature_dim] -> logits [batch, num_classes]
      (no softmax).
    feature_dim: width of the encoder output.
  """
  encoder: tf.keras.Model
  head: tf.keras.Model
  feature_dim: int


class SeedStream:
  """Hands out a distinct, reproducible seed per initialiser.

  Seeding each initialiser (rather than calling
  `tf.keras.utils.set_random_seed`) keeps builds deterministic without
  resetting the caller's global Python/NumPy/TF random state, which would
  silently correlate e.g. data shuffling with every model build. A seeded
  Keras initialiser returns the same values on every call, so each layer
  must get its own seed; drawing them from one generator keeps seeds of
  different `config.seed` values from colliding.
  """

  def __init__(self, seed: int):
    self._rng = np.random.default_rng(int(seed))

  def next_seed(self) -> int:
    return int(self._rng.integers(0, 2**31 - 1))

  def glorot_uniform(self) -> tf.keras.initializers.Initializer:
    """Keras' default kernel initialiser, seeded."""
    return tf.keras.initializers.GlorotUniform(seed=self.next_seed())

  def he_normal(self) -> tf.keras.initializers.Initializer:
    """He et al. (2015) initialiser for ReLU conv nets, seeded."""
    return tf.keras.initializers.HeNormal(seed=self.next_seed())


def pytorch_default_init(parts: ModelParts, seed: int) -> None:
  """Redraws every kernel and bias of `parts` as PyTorch initializes
  nn.Linear and nn.Conv*d: uniform in +-1/sqrt(fan_in), fan_in being the
  inputs that feed one output unit (in_features; in_channels / groups times
  the kernel's area). (PyTorch draws the kernel by kaiming_uniform_ with
  a=sqrt(5), whose bound gain * sqrt(3 / fan_in) is exactly that.)

  Under Keras' Glorot uniform a Dense(256 -> 120) kernel is bounded by
  0.126 and the bias is 0; under PyTorch by 0.0625 and the bias is drawn
  too. Such differences change how a model trains under extreme label skew
  (results/niid_bench), so comparing with PyTorch-published numbers needs
  the option. Layers are visited in the models' layer order and each
  weight draws from one generator seeded by `seed`: the same seed gives
  the same weights. Normalization layers keep scale 1 and offset 0, which
  are PyTorch's defaults too.

  Raises:
    UserError: a layer has trainable weights that are neither a
      normalization layer's nor a dense or convolution kernel and bias.
  """
  # A stream of its own, apart from SeedStream's initialiser seeds.
  rng = np.random.default_rng([int(seed), 0x7057])

  def draw(variable: tf.Variable, fan_in: int) -> None:
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    variable.assign(rng.uniform(-bound, bound,
                                tuple(variable.shape)).astype(np.float32))

  for model in (parts.encoder, parts.head):
    for layer in _weighted_layers(model):
      for variable, fan_in in _pytorch_fan_ins(layer):
        draw(variable, fan_in)


# Layers whose trainable weights PyTorch also starts at scale 1, offset 0.
_NORMALIZATION_LAYERS = (tf.keras.layers.BatchNormalization,
                         tf.keras.layers.LayerNormalization,
                         tf.keras.layers.GroupNormalization)


def _weighted_layers(model: tf.keras.Model):
  """Every layer of `model` with trainable weights, descending into nested
  models, in layer order."""
  for layer in model.layers:
    if isinstance(layer, tf.keras.Model):
      yield from _weighted_layers(layer)
    elif layer.trainable_weights:
      yield layer


def _pytorch_fan_ins(layer: tf.keras.layers.Layer):
  """(variable, fan_in) pairs to redraw for `layer`, the bias with its
  layer's fan-in as PyTorch does.

  Raises:
    UserError: `layer` has trainable weights of a kind PyTorch's rule is not
      written for here (e.g. attention or recurrent kernels, or a weight a
      Dense or Conv subclass adds): keeping Keras' values for them silently
      would mix the two initializations.
  """
  if isinstance(layer, _NORMALIZATION_LAYERS):
    return []
  if isinstance(layer, tf.keras.layers.SeparableConv2D):
    # PyTorch writes it as two convolutions: depthwise (groups = channels,
    # no bias) then 1x1 pointwise, which carries the bias.
    fan_in = _kernel_fan_in(layer.pointwise_kernel)
    pairs = [(layer.depthwise_kernel,
              _depthwise_fan_in(layer.depthwise_kernel)),
             (layer.pointwise_kernel, fan_in)]
  elif isinstance(layer, tf.keras.layers.DepthwiseConv2D):
    fan_in = _depthwise_fan_in(layer.depthwise_kernel)
    pairs = [(layer.depthwise_kernel, fan_in)]
  elif isinstance(layer, (tf.keras.layers.Dense, tf.keras.layers.Conv1D,
                          tf.keras.layers.Conv2D, tf.keras.layers.Conv3D)):
    fan_in = _kernel_fan_in(layer.kernel)
    pairs = [(layer.kernel, fan_in)]
  else:
    # No rule: all of its trainable weights are refused below.
    pairs = []
  if pairs and getattr(layer, "bias", None) is not None:
    pairs.append((layer.bias, fan_in))
  # Also a subclass of a known layer may add trainable weights of its own
  # (a learned scale, a gate): the rule above would leave them at Keras'
  # values, the same silent mix as a layer with no rule at all.
  redrawn = {variable.ref() for variable, _ in pairs}
  extra = [weight.name for weight in layer.trainable_weights
           if weight.ref() not in redrawn]
  if extra:
    raise UserError(f"--weight_init=pytorch: layer {layer.name!r} "
                    f"({type(layer).__name__}) has trainable weights with no "
                    f"PyTorch rule here ({', '.join(extra)}); use "
                    "--weight_init=keras")
  return pairs


def _kernel_fan_in(kernel: tf.Variable) -> int:
  """Inputs per output unit of a dense (inputs, units) or convolution
  (..., in_channels / groups, filters) kernel. A transposed convolution's
  (..., filters, in_channels) gives filters x area, PyTorch's fan-in for
  ConvTranspose too."""
  return int(np.prod(kernel.shape[:-1]))


def _depthwise_fan_in(kernel: tf.Variable) -> int:
  """A depthwise kernel (kh, kw, channels, multiplier) sees one input
  channel per output: its area."""
  return int(np.prod(kernel.shape[:-2]))


def scaled(width: int, config: ModelConfig) -> int:
  """`width` times the config's width multiplier, at least 1."""
  return max(1, int(round(width * config.width_multiplier)))


def group_count(channels: int) -> int:
  """Number of GroupNorm groups for a layer with `channels` channels.

  The largest divisor of `channels` that is at most 32 and leaves at least
  two channels per group, so narrow layers (e.g. ResNet-20's 16 channels ->
  8 groups) never degenerate into InstanceNorm, which normalises away
  per-channel contrast and trains worse (Wu & He 2018, Fig. 1).
  """
  if channels <= 1:
    return 1
  limit = min(MAX_GROUPS, channels // 2)
  for groups in range(limit, 0, -1):
    if channels % groups == 0:
      return groups
  return 1


def norm_layer(norm: str, channels: int, name: str) -> tf.keras.layers.Layer:
  """The normalisation layer selected by `ModelConfig.norm`."""
  if norm == "batch":
    return tf.keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=NORM_EPSILON, name=name)
  if norm == "group":
    return tf.keras.layers.GroupNormalization(
        groups=group_count(channels), epsilon=NORM_EPSILON, name=name)
  if norm == "none":
    return tf.keras.layers.Identity(name=name)
  raise UserError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")


def image_input(input_shape: tuple[int, int, int]) -> tf.keras.layers.Layer:
  """The float32 image input every encoder starts from."""
  return tf.keras.Input(shape=input_shape, dtype=tf.float32, name="image")


@tf.keras.saving.register_keras_serializable(package="fedclf")
class FeatureStandardization(tf.keras.layers.Layer):
  """(features - mean) / std per feature, with fixed (non-trainable) mean
  and std: identity until `set_statistics`.

  Why a head needs it: a self-supervised encoder's pooled features can sit
  far from zero with a small spread (SimCLR on Fashion-MNIST: mean |0.33|,
  std 0.07 per feature), so a fresh linear head trained by SGD on them
  learns slowly (an ill-conditioned problem); the linear probe standardizes
  them the same way (`fedclf.ssl.evaluate.feature_normalization`). Being
  weights, the statistics travel with the model: saved in model.keras,
  broadcast to federated clients, never changed by training. Loading a
  model.keras that has one needs this module imported (`import
  fedclf.models`), as any custom Keras layer does.
  """

  def build(self, input_shape):
    dim = int(input_shape[-1])
    self.mean = self.add_weight(name="mean", shape=(dim,),
                                initializer="zeros", trainable=False)
    self.std = self.add_weight(name="std", shape=(dim,), initializer="ones",
                               trainable=False)
    super().build(input_shape)

  def set_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
    dim = int(self.mean.shape[0])
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    if mean.shape != (dim,) or std.shape != (dim,) or not np.all(std > 0):
      raise ValueError(f"feature statistics must be {dim} means and {dim} "
                       f"positive stds, got shapes {mean.shape}, {std.shape}")
    self.mean.assign(mean)
    self.std.assign(std)

  def call(self, inputs):
    return (inputs - self.mean) / self.std

  def get_config(self):
    # Overridden because Keras' automatic config refuses this layer; name,
    # dtype and trainable are all it has (the statistics are weights).
    return super().get_config()


def build_head(feature_dim: int, num_classes: int, seeds: SeedStream,
               dropout: float = 0.0,
               standardize: bool = False) -> tf.keras.Model:
  """Optional feature standardization (`FeatureStandardization`, fixed)
  and dropout, then a linear layer to `num_classes` logits."""
  features = tf.keras.Input(shape=(feature_dim,), dtype=tf.float32,
                            name="features")
  x = features
  if standardize:
    x = FeatureStandardization(name="feature_standardization",
                               dtype=tf.float32)(x)
  if dropout > 0:
    x = tf.keras.layers.Dropout(dropout, name="dropout")(x)
  # float32 logits even under a mixed-precision policy: a float16 softmax /
  # cross-entropy over logits loses precision (Keras mixed-precision guide).
  logits = tf.keras.layers.Dense(
      num_classes, kernel_initializer=seeds.glorot_uniform(),
      dtype=tf.float32, name="logits")(x)
  return tf.keras.Model(features, logits, name="head")


def make_parts(inputs: tf.Tensor, features: tf.Tensor, num_classes: int,
               seeds: SeedStream,
               head_dropout: Optional[float] = None,
               config: Optional[ModelConfig] = None) -> ModelParts:
  """Wraps an encoder graph and adds the head.

  Args:
    inputs: the encoder's Keras input tensor.
    features: its rank-2 output tensor.
    num_classes: number of logits.
    seeds: the seed stream the encoder was built from (the head continues it).
    head_dropout: dropout before the head; defaults to `config.dropout`.
    config: the model config (needed when `head_dropout` is None; its
      `standardize_features` adds the head's standardization).

  Returns:
    The `ModelParts`.
  """
  if features.shape.rank != 2:
    raise ValueError(f"encoder output must be rank 2, got {features.shape}")
  if head_dropout is None:
    head_dropout = config.dropout if config is not None else 0.0
  encoder = tf.keras.Model(inputs, features, name="encoder")
  feature_dim = int(features.shape[-1])
  standardize = config is not None and config.standardize_features
  head = build_head(feature_dim, num_classes, seeds, dropout=head_dropout,
                    standardize=standardize)
  return ModelParts(encoder=encoder, head=head, feature_dim=feature_dim)
