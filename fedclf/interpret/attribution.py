"""Attribution maps: which input pixels a classifier's logit depends on.

All functions take the model's own inputs (normalized float images
[N, H, W, C], as `fedclf.train` feeds them) and explain the logit of one
class per image (usually the predicted one):

- `vanilla_gradients`: d logit / d input (Simonyan et al. 2014);
- `smoothgrad`: gradients averaged over noisy copies (Smilkov et al. 2017);
- `integrated_gradients`: the path integral of gradients from a baseline
  (Sundararajan et al. 2017), with its completeness check: the attributions
  of an image sum to logit(image) - logit(baseline);
- `grad_cam`: a convolution layer's activations weighted by the spatially
  averaged gradients, ReLU, upsampled to the input (Selvaraju et al. 2017).

fedclf classifiers nest their layers (an "encoder" and a "head" model), so
Grad-CAM finds the convolution inside the nested models and replays the
chain of models around it (`tapped_forward`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from fedclf.errors import UserError

# Forward pass that also returns one inner layer's activations.
TappedForward = Callable[[tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]


def _class_scores(logits: tf.Tensor, class_ids: tf.Tensor) -> tf.Tensor:
  return tf.gather(logits, class_ids, axis=1, batch_dims=1)


def _gradients(model: tf.keras.Model, images: tf.Tensor,
               class_ids: tf.Tensor) -> tf.Tensor:
  with tf.GradientTape() as tape:
    tape.watch(images)
    scores = _class_scores(model(images, training=False), class_ids)
  return tape.gradient(scores, images)


def _as_inputs(images: np.ndarray, class_ids: Sequence[int]):
  images = tf.convert_to_tensor(np.asarray(images, np.float32))
  class_ids = tf.convert_to_tensor(np.asarray(class_ids, np.int32))
  if images.shape.rank != 4 or class_ids.shape != (images.shape[0],):
    raise ValueError(f"expected images [N,H,W,C] and N class ids, got "
                     f"{images.shape} and {class_ids.shape}")
  return images, class_ids


def vanilla_gradients(model: tf.keras.Model, images: np.ndarray,
                      class_ids: Sequence[int]) -> np.ndarray:
  """Gradient of each image's class logit w.r.t. the image, [N,H,W,C]."""
  images, class_ids = _as_inputs(images, class_ids)
  return _gradients(model, images, class_ids).numpy()


def smoothgrad(model: tf.keras.Model, images: np.ndarray,
               class_ids: Sequence[int], samples: int, noise_level: float,
               seed: int) -> np.ndarray:
  """Gradients averaged over `samples` copies with Gaussian noise of std
  `noise_level` times each image's value range (Smilkov et al.: 10-20%)."""
  if samples < 1 or noise_level < 0:
    raise UserError("smoothgrad needs samples >= 1 and noise_level >= 0")
  images, class_ids = _as_inputs(images, class_ids)
  spread = (tf.reduce_max(images, axis=[1, 2, 3], keepdims=True) -
            tf.reduce_min(images, axis=[1, 2, 3], keepdims=True))
  rng = np.random.default_rng(seed)
  total = tf.zeros_like(images)
  for _ in range(samples):
    noise = rng.standard_normal(images.shape).astype(np.float32)
    total += _gradients(model, images + noise_level * spread * noise,
                        class_ids)
  return (total / samples).numpy()


@dataclasses.dataclass
class IntegratedGradients:
  """Attributions [N,H,W,C] and their completeness check per image.

  `attribution_sums[i]` should equal `output_differences[i]` =
  logit(image) - logit(baseline) of the explained class; the gap shrinks
  as the number of integration steps grows.
  """
  attributions: np.ndarray
  attribution_sums: np.ndarray
  output_differences: np.ndarray
  steps: int

  @property
  def absolute_errors(self) -> np.ndarray:
    return np.abs(self.attribution_sums - self.output_differences)

  @property
  def relative_errors(self) -> np.ndarray:
    return self.absolute_errors / np.maximum(np.abs(self.output_differences),
                                             1e-6)

  def completeness(self, tolerance: float) -> dict:
    """The check as a JSON-able report (relative error <= tolerance)."""
    relative = self.relative_errors
    return {
        "steps": self.steps,
        "tolerance_relative": tolerance,
        "attribution_sums": self.attribution_sums.tolist(),
        "output_differences": self.output_differences.tolist(),
        "absolute_errors": self.absolute_errors.tolist(),
        "relative_errors": relative.tolist(),
        "max_relative_error": float(relative.max()),
        "mean_relative_error": float(relative.mean()),
        "passed": bool(relative.max() <= tolerance),
    }


def integrated_gradients(model: tf.keras.Model, images: np.ndarray,
                         class_ids: Sequence[int], baseline: np.ndarray,
                         steps: int, chunk: int = 64) -> IntegratedGradients:
  """Integrated gradients along the straight path baseline -> image.

  The integral is the trapezoidal rule over `steps` equal intervals
  (steps + 1 gradient evaluations per image, `chunk` at a time).
  `baseline` has one image's shape (e.g. a black image, normalized).
  """
  if steps < 1:
    raise UserError(f"integrated gradients needs steps >= 1, got {steps}")
  images, class_ids = _as_inputs(images, class_ids)
  baseline = tf.convert_to_tensor(np.asarray(baseline, np.float32))
  if baseline.shape != images.shape[1:]:
    raise ValueError(f"baseline shape {baseline.shape} != image shape "
                     f"{images.shape[1:]}")
  alphas = tf.linspace(0.0, 1.0, steps + 1)
  weights = np.full(steps + 1, 1.0 / steps, np.float32)
  weights[[0, -1]] /= 2.0  # trapezoidal rule
  attributions = []
  for image, class_id in zip(images, class_ids):
    path_grads = tf.zeros_like(image)
    for start in range(0, steps + 1, chunk):
      a = alphas[start:start + chunk][:, None, None, None]
      path = baseline + a * (image - baseline)
      ids = tf.fill([tf.shape(path)[0]], class_id)
      grads = _gradients(model, path, ids)
      w = tf.constant(weights[start:start + chunk])[:, None, None, None]
      path_grads += tf.reduce_sum(w * grads, axis=0)
    attributions.append((image - baseline) * path_grads)
  attributions = tf.stack(attributions).numpy()
  ends = tf.stack([images, tf.broadcast_to(baseline, images.shape)])
  logits = model(tf.reshape(ends, [-1, *images.shape[1:]]), training=False)
  scores = _class_scores(logits, tf.concat([class_ids, class_ids], 0))
  n = images.shape[0]
  differences = (scores[:n] - scores[n:]).numpy()
  return IntegratedGradients(
      attributions=attributions,
      attribution_sums=attributions.reshape(n, -1).sum(axis=1),
      output_differences=differences, steps=steps)


# -- Grad-CAM -----------------------------------------------------------------
def _is_model(layer) -> bool:
  return isinstance(layer, tf.keras.Model)


def conv_layer_names(model: tf.keras.Model) -> List[str]:
  """Names of every 2-D convolution (nested models searched), in order."""
  names = []
  for layer in model.layers:
    if _is_model(layer):
      names.extend(conv_layer_names(layer))
    elif isinstance(layer, (tf.keras.layers.Conv2D,
                            tf.keras.layers.SeparableConv2D,
                            tf.keras.layers.DepthwiseConv2D)):
      names.append(layer.name)
  return names


def last_conv_layer_name(model: tf.keras.Model) -> str:
  names = conv_layer_names(model)
  if not names:
    raise UserError(f"model {model.name!r} has no convolution layer; "
                    "Grad-CAM needs a convolutional model")
  return names[-1]


def _contains(model: tf.keras.Model, name: str) -> bool:
  return any(layer.name == name or (_is_model(layer) and
                                     _contains(layer, name))
             for layer in model.layers)


def _chain(model: tf.keras.Model) -> List[tf.keras.layers.Layer]:
  """The layers of `model` when each feeds only the next; else an error."""
  layers = [l for l in model.layers
            if not isinstance(l, tf.keras.layers.InputLayer)]
  if isinstance(model, tf.keras.Sequential):
    return layers
  previous = model.layers[0].name
  for spec in model.get_config()["layers"][1:]:
    inbound = [node[0] for group in spec["inbound_nodes"] for node in group]
    if inbound != [previous]:
      raise UserError(f"Grad-CAM inside nested model of {model.name!r} "
                      "needs a chain of layers; name a top-level "
                      "convolution with --gradcam_layer")
    previous = spec["name"]
  return layers


def tapped_forward(model: tf.keras.Model, layer_name: str) -> TappedForward:
  """A function images -> (activations of `layer_name`, model outputs)."""
  if not _contains(model, layer_name):
    known = ", ".join(conv_layer_names(model)) or "none"
    raise UserError(f"no layer named {layer_name!r} in model "
                    f"{model.name!r}; its convolutions: {known}")
  direct = [l for l in model.layers if l.name == layer_name]
  if direct:
    tap = tf.keras.Model(model.inputs, [direct[0].output, model.output])
    return lambda x: tuple(tap(x, training=False))
  layers = _chain(model)
  owner = next(l for l in layers if _is_model(l) and _contains(l, layer_name))
  inner = tapped_forward(owner, layer_name)

  def forward(x):
    activations = None
    for layer in layers:
      if layer is owner:
        activations, x = inner(x)
      else:
        x = layer(x, training=False)
    return activations, x

  return forward


def grad_cam(model: tf.keras.Model, images: np.ndarray,
             class_ids: Sequence[int],
             layer_name: Optional[str] = None) -> np.ndarray:
  """Grad-CAM maps [N, H, W] (non-negative, at the input's resolution) of
  `layer_name`, by default the model's last convolution."""
  images, class_ids = _as_inputs(images, class_ids)
  forward = tapped_forward(model, layer_name or last_conv_layer_name(model))
  with tf.GradientTape() as tape:
    activations, logits = forward(images)
    scores = _class_scores(logits, class_ids)
  grads = tape.gradient(scores, activations)
  channel_weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)
  cam = tf.nn.relu(tf.reduce_sum(channel_weights * activations, axis=-1))
  cam = tf.image.resize(cam[..., None], images.shape[1:3], method="bilinear")
  return cam[..., 0].numpy()


def heatmap(attributions: np.ndarray) -> np.ndarray:
  """[N,H,W,C] attributions -> [N,H,W] magnitude (sum of |.| over channels);
  [N,H,W] maps (Grad-CAM) pass through."""
  attributions = np.asarray(attributions)
  if attributions.ndim == 3:
    return attributions
  return np.abs(attributions).sum(axis=-1)
