"""A zoo model as a function of K clients' weights stacked on a client axis.

    plan = plan_for(model)          # raises Unbatchable(reason)
    logits = forward(plan, weights, images)

`weights[i]` is `model.trainable_variables[i]` with a leading client axis
[K, ...]; `images` is [K, B, H, W, C] (client k's batch at row k), and the
logits are [K, B, classes]. Dense layers become batched matmuls and
convolutions grouped convolutions (the clients folded into the channels,
where the activations stay up to the flatten), so each kernel does all K
clients' work: with the batch sizes of federated
papers (B=10) one client's step is too small to fill the cores, K clients'
steps together are not (measurements: BUILD_NOTES.md, "Batched clients").

Only chains of the layers below are planned; anything else (BatchNorm,
residual connections, dropout, ...) raises `Unbatchable` with the reason,
and the backend trains that model client by client instead.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, List, Optional, Sequence, Tuple

import tensorflow as tf


class Unbatchable(Exception):
  """The model has a layer or structure `forward` cannot run stacked."""


@dataclasses.dataclass(frozen=True)
class Op:
  """One layer of the plan: its kind, its Keras layer and the indices of
  its kernel and bias in the model's trainable variables (-1: none)."""
  kind: str  # conv, dense, pool, flatten, activation
  layer: tf.keras.layers.Layer
  kernel: int = -1
  bias: int = -1


_POOLS = (tf.keras.layers.MaxPool2D, tf.keras.layers.AveragePooling2D)
_ACTIVATIONS = (tf.keras.layers.ReLU, tf.keras.layers.Activation)


def _layers(model: tf.keras.Model) -> List[tf.keras.layers.Layer]:
  """The model's layers in order, nested models (encoder, head) expanded."""
  out = []
  for layer in model.layers:
    if isinstance(layer, tf.keras.Model):
      out.extend(_layers(layer))
    elif not isinstance(layer, tf.keras.layers.InputLayer):
      out.append(layer)
  return out


def _weight_index(variables, variable) -> int:
  for i, v in enumerate(variables):
    if v is variable:
      return i
  raise Unbatchable(f"weight {variable.name} is not trainable")


def _op(layer, variables) -> Op:
  """The plan's op for `layer` (raises Unbatchable)."""
  name = f"layer {layer.name} ({type(layer).__name__})"
  if isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense)):
    kind = "dense" if isinstance(layer, tf.keras.layers.Dense) else "conv"
    if kind == "conv" and (
        type(layer) is not tf.keras.layers.Conv2D or layer.groups != 1 or
        tuple(layer.dilation_rate) != (1, 1) or
        layer.data_format != "channels_last"):
      raise Unbatchable(f"{name}: only plain channels-last convolutions")
    bias = (_weight_index(variables, layer.bias) if layer.use_bias else -1)
    return Op(kind, layer, _weight_index(variables, layer.kernel), bias)
  if layer.weights:
    raise Unbatchable(f"{name} has weights")
  if isinstance(layer, _POOLS):
    return Op("pool", layer)
  if isinstance(layer, tf.keras.layers.Flatten):
    return Op("flatten", layer)
  if isinstance(layer, _ACTIVATIONS):
    return Op("activation", layer)
  raise Unbatchable(f"{name} is not supported")


def plan_for(model: tf.keras.Model) -> Tuple[Op, ...]:
  """The stacked form of `model`, a chain of supported layers.

  Raises:
    Unbatchable: a layer it cannot run stacked, non-trainable weights, or a
      model that is not a chain (checked by comparing outputs).
  """
  if model.non_trainable_weights:
    raise Unbatchable("the model has non-trainable weights")
  variables = model.trainable_variables
  plan = tuple(_op(layer, variables) for layer in _layers(model))
  used = sorted(i for op in plan for i in (op.kernel, op.bias) if i >= 0)
  if used != list(range(len(variables))):
    raise Unbatchable("the layers do not use every trainable weight once")
  # A branching model can consist of supported layers only: check that the
  # chain computes what the model does.
  probe = tf.random.stateless_uniform([1, 2, *model.input_shape[1:]],
                                      [1, 2])
  stacked = forward(plan, [v[tf.newaxis] for v in variables], probe)
  expected = model(probe[0], training=False)
  if stacked.shape[1:] != expected.shape or not bool(tf.reduce_all(
      tf.abs(stacked[0] - expected) <= 1e-4 + 1e-4 * tf.abs(expected))):
    raise Unbatchable("the model is not a chain of its layers")
  return plan


def _dims(x: tf.Tensor) -> list:
  """The shape of `x`, static where known (later layers' shape inference
  needs the channels), else dynamic."""
  dynamic = tf.shape(x)
  return [d if d is not None else dynamic[i]
          for i, d in enumerate(x.shape.as_list())]


def _per_example(fn: Callable, x: tf.Tensor) -> tf.Tensor:
  """`fn` of the [K * B, ...] images of `x` [K, B, ...], reshaped back."""
  k, b, *rest = _dims(x)
  y = fn(tf.reshape(x, [k * b, *rest]))
  return tf.reshape(y, [k, b, *_dims(y)[1:]])


def _grouped_filters(kernel: tf.Tensor) -> tf.Tensor:
  """Stacked kernels [K, kh, kw, Cin, Cout] as the filter [kh, kw, Cin,
  K * Cout] of a grouped convolution."""
  kh, kw, cin = _dims(kernel)[1:4]
  return tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]), [kh, kw, cin, -1])


def grouped_conv(x: tf.Tensor, kernel: tf.Tensor, strides: Sequence[int],
                 padding: str) -> tf.Tensor:
  """Client k's images x[k] [B, H, W, Cin] convolved with its kernel
  kernel[k] [kh, kw, Cin, Cout], for every k, as one grouped convolution:
  the clients folded into the channels (input [B, H, W, K * Cin], filter
  [kh, kw, Cin, K * Cout]), which conv2d runs as K groups."""
  return unfold(tf.nn.conv2d(fold(x), _grouped_filters(kernel), strides,
                             padding), _dims(kernel)[0])


def im2col_conv(x: tf.Tensor, kernel: tf.Tensor, strides: Sequence[int],
                padding: str) -> tf.Tensor:
  """As `grouped_conv`, but as patches (kh * kw shifted slices of the
  padded images) times the stacked kernels in one batched matmul; strides
  of 1 only."""
  if tuple(strides) != (1, 1):
    raise Unbatchable("im2col convolutions need strides of 1")
  kh, kw, cin, cout = kernel.shape[1:]
  if padding.upper() == "SAME":
    x = tf.pad(x, [[0, 0], [0, 0], [(kh - 1) // 2, kh // 2],
                   [(kw - 1) // 2, kw // 2], [0, 0]])
  k, b = tf.shape(x)[0], tf.shape(x)[1]
  h, w = tf.shape(x)[2] - kh + 1, tf.shape(x)[3] - kw + 1
  patches = tf.concat([x[:, :, i:i + h, j:j + w, :]
                       for i in range(kh) for j in range(kw)], -1)
  y = tf.matmul(tf.reshape(patches, [k, -1, kh * kw * cin]),
                tf.reshape(kernel, [-1, kh * kw * cin, cout]))
  return tf.reshape(y, [k, b, h, w, cout])


@functools.lru_cache(maxsize=None)
def grouped_conv_gradient_error() -> Optional[str]:
  """Why this TensorFlow cannot differentiate `grouped_conv` on its default
  device (None: it can). TensorFlow's own CPU kernels have no grouped
  backward pass (Conv2DBackpropInput raises); oneDNN's and cuDNN's have
  one, so it depends on the build, the device and TF_ENABLE_ONEDNN_OPTS,
  which only a try tells."""
  x = tf.ones([2, 1, 3, 3, 2])
  kernel = tf.ones([2, 1, 1, 2, 2])
  try:
    with tf.GradientTape() as tape:
      tape.watch([x, kernel])
      y = tf.reduce_sum(grouped_conv(x, kernel, (1, 1), "SAME"))
    tape.gradient(y, [x, kernel])
  except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
    return ("this TensorFlow has no gradient for grouped convolutions on "
            "this device (on CPU it needs oneDNN: TF_ENABLE_ONEDNN_OPTS=1 "
            "before TensorFlow loads)")
  return None


def fold(x: tf.Tensor) -> tf.Tensor:
  """Stacked images [K, B, H, W, C] as one batch [B, H, W, K * C]: the
  clients folded into the channels, the layout of `grouped_conv`."""
  k, b, h, w, c = _dims(x)
  return tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]), [b, h, w, k * c])


def unfold(x: tf.Tensor, k) -> tf.Tensor:
  """The inverse of `fold` for `k` clients."""
  b, h, w, channels = _dims(x)
  x = tf.reshape(x, [b, h, w, k, channels // k])
  return tf.transpose(x, [3, 0, 1, 2, 4])


def _conv(op: Op, weights, x, folded: bool, convolve: Optional[Callable]):
  """(output, folded) of a convolution: grouped on the folded layout, or
  `convolve` on the stacked one."""
  kernel, layer = weights[op.kernel], op.layer
  k = _dims(kernel)[0]
  if convolve is not None:
    x = convolve(unfold(x, k) if folded else x, kernel, layer.strides,
                 layer.padding.upper())
    return x, False
  x = tf.nn.conv2d(x if folded else fold(x), _grouped_filters(kernel),
                   layer.strides, layer.padding.upper())
  return x, True


def _apply(op: Op, weights: Sequence[tf.Tensor], x: tf.Tensor, folded: bool,
           convolve: Optional[Callable]) -> Tuple[tf.Tensor, bool]:
  """(output, whether it is folded) of `op` on `x`."""
  layer = op.layer
  k = _dims(weights[0])[0]
  if op.kind == "conv":
    x, folded = _conv(op, weights, x, folded, convolve)
  elif op.kind == "dense":
    x = tf.matmul(unfold(x, k) if folded else x, weights[op.kernel])
    folded = False
  elif op.kind == "pool":
    # Pooling is per channel, so the folded layout pools as it is.
    return (layer(x) if folded else _per_example(layer, x)), folded
  elif op.kind == "flatten":
    x = unfold(x, k) if folded else x
    return tf.reshape(x, [k, _dims(x)[1], -1]), False
  else:
    return layer(x), folded  # an activation: elementwise
  if op.bias >= 0:
    bias = weights[op.bias]
    if folded:
      bias = tf.reshape(bias, [-1])  # [K * Cout], as the folded channels
    else:
      bias = tf.reshape(bias, [k] + [1] * (len(x.shape) - 2) +
                        [bias.shape[-1]])
    x += bias
  return layer.activation(x), folded


def forward(plan: Sequence[Op], weights: Sequence[tf.Tensor], x: tf.Tensor,
            convolve: Optional[Callable] = None) -> tf.Tensor:
  """Logits [K, B, classes] of images `x` [K, B, ...] under the stacked
  `weights` (one [K, ...] tensor per trainable variable).

  Convolutions are grouped, their activations kept folded ([B, H, W,
  K * C]) up to the next flatten or dense layer, so no transpose runs
  between the convolutions and pools; `convolve(x, kernel, strides,
  padding)` on stacked [K, B, ...] activations replaces them (the
  candidates of benchmarks/batched_kernels.py)."""
  folded = False
  for op in plan:
    x, folded = _apply(op, weights, x, folded, convolve)
  return unfold(x, _dims(weights[0])[0]) if folded else x
