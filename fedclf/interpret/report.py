"""One interpretation run over a trained fedclf model (what
`python -m fedclf.interpret` runs).

Writes to `out_dir`:
- attributions.png: chosen test examples (correct and misclassified) with
  each method's map and overlay, explaining the predicted class;
- ig_completeness.json: integrated gradients' completeness check;
- randomization.json / .png, randomization_maps.png: the cascading
  model-parameter randomization test;
- compare.json / compare.png (with a second run): both models' maps of
  the true class on the same inputs and their similarity;
- architecture.png (Keras plot_model), filters.png (first convolution),
  activations.png (every convolution's feature maps of one example);
- config.json and summary.json (fedclf.results.record).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, List, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from fedclf.errors import UserError
from fedclf.interpret import attribution
from fedclf.interpret import visualize
from fedclf.interpret.sanity import cascading_randomization
from fedclf.interpret.similarity import foreground
from fedclf.interpret.similarity import map_similarity
from fedclf.results import atomic_write_json
from fedclf.results import run_folder
from fedclf.results import RunRecorder
from fedclf.run_reader import load_classifier_run
from fedclf.run_reader import TrainedRun
from fedclf.train.loop import predict_logits

METHODS = ("gradient", "smoothgrad", "integrated_gradients", "grad_cam")


@dataclasses.dataclass(frozen=True)
class InterpretConfig:
  """One interpretation run.

  Attributes:
    run_dir: the trained run to explain (any classifier kind of
      `fedclf.results.trained_run`).
    name: its label in figures (default: the run's kind).
    compare_run_dir: optional second run compared on the same inputs.
    compare_name: its label (default: its kind).
    data_dir: overrides the data directory the runs recorded.
    examples: correctly classified test examples in the grid.
    misclassified: misclassified test examples in the grid (fewer when the
      model makes fewer mistakes).
    methods: attribution methods (`METHODS`).
    ig_steps: integration steps of integrated gradients.
    ig_tolerance: completeness passes when |sum - difference| <= this
      fraction of |logit(x) - logit(baseline)|.
    smoothgrad_samples, smoothgrad_noise: SmoothGrad's sample count and
      noise std as a fraction of each image's value range.
    gradcam_layer: the convolution Grad-CAM explains ("" = the last one).
    randomization_examples: correctly classified examples in the
      randomization test.
    architecture: draw the architecture diagram (needs graphviz).
    seed: example choice, SmoothGrad noise and re-initialization.
  """
  run_dir: str
  name: str = ""
  compare_run_dir: str = ""
  compare_name: str = ""
  data_dir: str = ""
  examples: int = 6
  misclassified: int = 4
  methods: Tuple[str, ...] = METHODS
  ig_steps: int = 128
  ig_tolerance: float = 0.01
  smoothgrad_samples: int = 32
  smoothgrad_noise: float = 0.15
  gradcam_layer: str = ""
  randomization_examples: int = 8
  architecture: bool = True
  seed: int = 0

  def validate(self) -> None:
    unknown = sorted(set(self.methods) - set(METHODS))
    if unknown or not self.methods:
      raise UserError(f"unknown attribution method {unknown[0]!r}; choose "
                      f"from: {', '.join(METHODS)}" if unknown else
                      "choose at least one attribution method")
    if self.examples < 1 or self.misclassified < 0:
      raise UserError("examples must be >= 1 and misclassified >= 0")
    if self.randomization_examples < 1:
      raise UserError("randomization_examples must be >= 1")
    if self.ig_steps < 1 or self.smoothgrad_samples < 1:
      raise UserError("ig_steps and smoothgrad_samples must be >= 1")
    if self.ig_tolerance <= 0 or self.smoothgrad_noise < 0:
      raise UserError("ig_tolerance must be > 0 and smoothgrad_noise >= 0")
    if self.architecture:
      # Before the work, not after every other figure is drawn.
      visualize.check_architecture_tools()


Explainer = Callable[[tf.keras.Model, np.ndarray, Sequence[int]], np.ndarray]


def explainers(config: InterpretConfig,
               baseline: np.ndarray) -> Dict[str, Explainer]:
  """method -> (model, inputs, class ids) -> [N, H, W] magnitude maps."""
  table: Dict[str, Explainer] = {
      "gradient": lambda m, x, c: attribution.heatmap(
          attribution.vanilla_gradients(m, x, c)),
      "smoothgrad": lambda m, x, c: attribution.heatmap(
          attribution.smoothgrad(m, x, c, config.smoothgrad_samples,
                                 config.smoothgrad_noise, config.seed)),
      "integrated_gradients": lambda m, x, c: attribution.heatmap(
          attribution.integrated_gradients(m, x, c, baseline,
                                           config.ig_steps).attributions),
      "grad_cam": lambda m, x, c: attribution.grad_cam(
          m, x, c, config.gradcam_layer or None),
  }
  return {name: table[name] for name in config.methods}


def choose_examples(labels: np.ndarray, predictions: np.ndarray,
                    correct: int, misclassified: int,
                    seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """Seeded test indices: `correct` right and up to `misclassified` wrong."""
  rng = np.random.default_rng(seed)
  right = np.flatnonzero(predictions == labels)
  wrong = np.flatnonzero(predictions != labels)
  if len(right) < correct:
    raise UserError(f"only {len(right)} test examples are classified "
                    f"correctly; lower --examples (asked {correct})")
  return (np.sort(rng.choice(right, correct, replace=False)),
          np.sort(rng.permutation(wrong)[:misclassified]))


def _titles(labels, predictions, class_names) -> List[str]:
  return [(f"label {class_names[y]}\npred {class_names[p]}" +
           ("" if y == p else "  WRONG"))
          for y, p in zip(labels, predictions)]


def _maps(run: TrainedRun, methods: Dict[str, Explainer],
          inputs: np.ndarray, class_ids: np.ndarray,
          baseline: np.ndarray, config: InterpretConfig):
  """Every method's maps, integrated gradients' completeness report."""
  maps = {}
  completeness = None
  for name, explain in methods.items():
    if name == "integrated_gradients":
      ig = attribution.integrated_gradients(run.model, inputs, class_ids,
                                            baseline, config.ig_steps)
      maps[name] = attribution.heatmap(ig.attributions)
      completeness = ig.completeness(config.ig_tolerance)
    else:
      maps[name] = explain(run.model, inputs, class_ids)
  return maps, completeness


def _label(run: TrainedRun, name: str) -> str:
  return name or run.kind


def _model_pictures(run: TrainedRun, config: InterpretConfig, image: np.ndarray,
                    display: np.ndarray, out_dir: str, label: str) -> List[str]:
  written = []
  if config.architecture:
    visualize.plot_architecture(run.model, os.path.join(out_dir,
                                                        "architecture.png"))
    written.append("architecture.png")
  convs = attribution.conv_layer_names(run.model)
  if not convs:
    logging.info("no convolution layers: no filter or activation images")
    return written
  visualize.plot_filters(visualize.conv_kernel(run.model, convs[0]),
                         os.path.join(out_dir, "filters.png"),
                         f"{label} model: first-layer filters ({convs[0]})")
  visualize.plot_activations(
      visualize.layer_activations(run.model, image, convs), display,
      os.path.join(out_dir, "activations.png"),
      f"{label} model: convolution activations of one test image")
  return written + ["filters.png", "activations.png"]


def run_interpret(config: InterpretConfig, out_dir: str,
                  run_config: Dict) -> Dict:
  """Explains the run's model and writes the results files."""
  config.validate()
  found = run_folder.existing_run(out_dir)
  if found:
    # The binary's claim moved it aside already if --overwrite asked to.
    raise UserError(f"{out_dir} already holds an interpretation ({found}); "
                    f"pass --overwrite to move it aside, or choose another "
                    f"--out_dir")
  run = load_classifier_run(config.run_dir, config.data_dir)
  name = _label(run, config.name)
  recorder = RunRecorder(out_dir, {"flags": run_config, "resolved": config})
  ds = run.data()
  norm = run.normalization
  logits = predict_logits(run.model, ds.x_test, norm)
  predictions = logits.argmax(-1)
  right, wrong = choose_examples(ds.y_test, predictions, config.examples,
                                 config.misclassified, config.seed)
  chosen = np.concatenate([right, wrong])
  display = ds.x_test[chosen]
  inputs = norm.apply(display).astype(np.float32)
  # A black image, normalized as the model sees it.
  baseline = norm.apply(np.zeros(run.input_shape, np.float32)).astype(
      np.float32)
  methods = explainers(config, baseline)

  maps, completeness = _maps(run, methods, inputs, predictions[chosen],
                             baseline, config)
  visualize.plot_attribution_grid(
      os.path.join(out_dir, "attributions.png"), display,
      _titles(ds.y_test[chosen], predictions[chosen], ds.class_names), maps,
      f"{name} model: attributions of the predicted class "
      f"({len(right)} correct, {len(wrong)} misclassified test examples)")
  ig_report = {"baseline": "black image (normalized)", name: completeness}

  count = min(config.randomization_examples, len(right))
  sanity = cascading_randomization(run.model, inputs[:count],
                                   predictions[chosen][:count], methods,
                                   config.seed, foreground(display[:count]))
  atomic_write_json(os.path.join(out_dir, "randomization.json"),
                    {"model": name, "examples": count, **sanity.report()})
  visualize.plot_randomization_curves(
      os.path.join(out_dir, "randomization.png"), sanity.steps,
      sanity.similarity,
      f"{name} model: cascading randomization, mean over {count} examples")
  visualize.plot_randomization_maps(
      os.path.join(out_dir, "randomization_maps.png"), display[0],
      sanity.steps, sanity.original_maps, sanity.randomized_maps,
      f"{name} model: maps as layers are randomized from the top")

  summary: Dict = {
      "model": name, "run_dir": config.run_dir,
      "test_accuracy": float(np.mean(predictions == ds.y_test)),
      "examples": chosen.tolist(), "misclassified_examples": wrong.tolist(),
      "gradcam_layer": ((config.gradcam_layer or
                         attribution.last_conv_layer_name(run.model))
                        if "grad_cam" in config.methods else None),
      "ig_completeness_passed": completeness["passed"] if completeness
                                else None,
      "ig_max_relative_error": completeness["max_relative_error"]
                               if completeness else None,
      "randomization_final_step": {
          method: {key: entries[-1][key] for key in
                   ("spearman_abs", "spearman_abs_foreground", "ssim")}
          for method, entries in sanity.similarity.items()},
  }
  files = ["attributions.png", "randomization.png", "randomization_maps.png",
           "randomization.json"]

  if config.compare_run_dir:
    other = load_classifier_run(config.compare_run_dir, config.data_dir)
    other_name = _label(other, config.compare_name)
    if other.input_shape != run.input_shape or (
        other.num_classes != run.num_classes):
      raise UserError(f"cannot compare: {config.run_dir} takes "
                      f"{run.input_shape} -> {run.num_classes} classes, "
                      f"{config.compare_run_dir} {other.input_shape} -> "
                      f"{other.num_classes}")
    comparison = compare_models(run, other, (name, other_name), methods,
                                display, ds.y_test[chosen], config,
                                out_dir, ds.class_names)
    ig_report[other_name] = comparison.pop("ig_completeness")
    summary["comparison"] = {method: {k: v for k, v in entry.items()
                                      if k != "per_example"}
                             for method, entry in
                             comparison["similarity"].items()}
    files += ["compare.json", "compare.png"]

  atomic_write_json(os.path.join(out_dir, "ig_completeness.json"), ig_report)
  files.append("ig_completeness.json")
  files += _model_pictures(run, config, inputs[0], display[0], out_dir, name)
  summary["files"] = files
  recorder.write_summary(summary)
  return summary


def compare_models(run_a: TrainedRun, run_b: TrainedRun,
                   names: Tuple[str, str], methods: Dict[str, Explainer],
                   display: np.ndarray, labels: np.ndarray,
                   config: InterpretConfig,
                   out_dir: str, class_names: Sequence[str]) -> Dict:
  """Both models' maps of the true class on the same images (each model
  normalizes them its own way) and their similarity per method."""
  maps = []
  completeness = None
  for run in (run_a, run_b):
    inputs = run.normalization.apply(display).astype(np.float32)
    base = run.normalization.apply(
        np.zeros(run.input_shape, np.float32)).astype(np.float32)
    result, completeness = _maps(run, methods, inputs, labels, base, config)
    maps.append(result)
  scores = {method: map_similarity(maps[0][method], maps[1][method],
                                  foreground(display))
            for method in methods}
  titles = [f"label {class_names[y]}" for y in labels]
  visualize.plot_comparison(
      os.path.join(out_dir, "compare.png"), display, titles, names, maps[0],
      maps[1], scores,
      f"{names[0]} vs {names[1]} model: maps of the true class "
      "(rho: Spearman rank correlation of |map|)")
  report = {"models": {names[0]: run_a.run_dir, names[1]: run_b.run_dir},
            "explained_class": "true label", "labels": labels.tolist(),
            "similarity": scores}
  atomic_write_json(os.path.join(out_dir, "compare.json"), report)
  return {**report, "ig_completeness": completeness}
