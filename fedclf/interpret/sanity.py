"""The model-parameter randomization test (Adebayo et al., 2018).

An explanation that describes the model must change when the model does.
Starting from the trained model, the layers are re-initialized one at a
time from the top (logits) down, cumulatively ("cascading"), and after
each step every method's maps are compared with the trained model's maps
(Spearman rank correlation of |map| and SSIM). A method whose maps stay
similar while the weights are destroyed is explaining the input (edges),
not the model.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from fedclf.interpret.similarity import map_similarity

# images, class ids -> [N, H, W] maps, for a given model.
Explainer = Callable[[tf.keras.Model, np.ndarray, Sequence[int]], np.ndarray]


def layers_with_weights(model: tf.keras.Model) -> List[tf.keras.layers.Layer]:
  """Leaf layers that own weights, input to output (nested models
  flattened)."""
  found = []
  for layer in model.layers:
    if isinstance(layer, tf.keras.Model):
      found.extend(layers_with_weights(layer))
    elif layer.weights:
      found.append(layer)
  return found


def reinitialize(layer: tf.keras.layers.Layer, rng: np.random.Generator
                 ) -> None:
  """Draws the layer's weights again from its own initializers, reseeded
  (kernel from kernel_initializer, bias from bias_initializer, ...);
  weights without one get Glorot-uniform (matrices) or are left alone."""
  for weight in layer.weights:
    attribute = weight.name.split("/")[-1].split(":")[0]
    initializer = getattr(layer, f"{attribute}_initializer", None)
    seed = int(rng.integers(0, 2**31 - 1))
    if initializer is not None:
      config = initializer.get_config()
      if "seed" in config:
        config["seed"] = seed
      initializer = initializer.__class__.from_config(config)
    elif weight.shape.rank >= 2:
      initializer = tf.keras.initializers.GlorotUniform(seed=seed)
    else:
      continue
    weight.assign(initializer(weight.shape, weight.dtype))


def copy_model(model: tf.keras.Model) -> tf.keras.Model:
  clone = tf.keras.models.clone_model(model)
  clone.set_weights(model.get_weights())
  return clone


@dataclasses.dataclass
class RandomizationResult:
  """Per step (after randomizing `steps[i]` and every layer above it):
  each method's similarity to the trained model's maps, and the maps."""
  steps: List[str]
  similarity: Dict[str, List[Dict]]  # method -> one entry per step
  original_maps: Dict[str, np.ndarray]
  randomized_maps: Dict[str, List[np.ndarray]]  # method -> per step

  def report(self) -> Dict:
    return {
        "order": "cascading, from the logits layer down",
        "steps": self.steps,
        "methods": {
            method: [{"randomized_through": layer, **entry}
                     for layer, entry in zip(self.steps, entries)]
            for method, entries in self.similarity.items()},
    }


def cascading_randomization(model: tf.keras.Model, images: np.ndarray,
                            class_ids: Sequence[int],
                            explainers: Dict[str, Explainer],
                            seed: int,
                            mask: Optional[np.ndarray] = None
                            ) -> RandomizationResult:
  """Runs the test on a copy of `model` (which is left untouched).

  `class_ids` stay fixed (the trained model's predictions), so each map
  explains the same logit before and after randomization. `mask` ([N,H,W]
  bool, e.g. the digit's pixels) adds the rank correlation inside it.
  """
  original = {name: explain(model, images, class_ids)
              for name, explain in explainers.items()}
  randomized = copy_model(model)
  rng = np.random.default_rng(seed)
  steps: List[str] = []
  scores: Dict[str, List[Dict]] = {name: [] for name in explainers}
  maps: Dict[str, List[np.ndarray]] = {name: [] for name in explainers}
  for layer in reversed(layers_with_weights(randomized)):
    reinitialize(layer, rng)
    steps.append(layer.name)
    for name, explain in explainers.items():
      result = explain(randomized, images, class_ids)
      maps[name].append(result)
      scores[name].append(map_similarity(original[name], result, mask))
  return RandomizationResult(steps=steps, similarity=scores,
                             original_maps=original, randomized_maps=maps)
