"""How good is a pretrained encoder? Linear probe, kNN, label efficiency,
t-SNE.

Every evaluation reuses `fedclf.train.loop` (feature extraction is
`predict_logits` on the encoder; probes and fine-tuning are
`train_classifier`), so they share its optimizers, schedules and
divergence checks.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

from absl import logging
import numpy as np
import tensorflow as tf

from fedclf.data import ImageDataset
from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError
from fedclf.models import ModelParts
from fedclf.models.building_blocks import build_head
from fedclf.models.building_blocks import SeedStream
from fedclf.results import RunRecorder
from fedclf.results.record import atomic_output
from fedclf.train.centralized import labelled_subset
from fedclf.train.loop import evaluate_classifier
from fedclf.train.loop import predict_logits
from fedclf.train.loop import train_classifier
from fedclf.train.loop import TrainConfig
from fedclf.train.optimizers import OptimizerConfig

Arrays = Tuple[np.ndarray, np.ndarray]

# Logistic regression on standardized features converges in a few dozen
# epochs with Adam at 1e-2 (1e-3 leaves small probe sets far from the
# optimum); no checkpoints (extracting features is the slow part).
DEFAULT_PROBE = TrainConfig(
    epochs=30, batch_size=256,
    optimizer=OptimizerConfig(name="adam", learning_rate=1e-2,
                              schedule="cosine"),
    checkpoint_every=0)
DEFAULT_FINETUNE = TrainConfig(
    epochs=30, batch_size=64,
    optimizer=OptimizerConfig(name="adam", learning_rate=1e-3,
                              schedule="cosine"),
    checkpoint_every=0)



@dataclasses.dataclass(frozen=True)
class FinetuneRecipe:
  """How the pretrained encoder is fine-tuned on the labelled subset (the
  from-scratch baseline always trains every layer with the plain config).

  Attributes:
    head_epochs: epochs that train the fresh head alone on the frozen
      encoder before every layer trains (LP-FT, Kumar et al. 2022: a random
      head's first large gradients otherwise distort the pretrained
      features); 0 = fine-tune every layer from the start.
    lr_scale: the learning rate of the all-layers stage relative to the
      config's (the baseline keeps the config's).
  """
  head_epochs: int = 0
  lr_scale: float = 1.0

  def validate(self) -> None:
    if self.head_epochs < 0:
      raise UserError(f"finetune head epochs must be >= 0, got "
                      f"{self.head_epochs}")
    if not (np.isfinite(self.lr_scale) and self.lr_scale > 0):
      raise UserError(f"finetune lr scale must be > 0, got {self.lr_scale}")


# Added to the feature variance before standardizing (BatchNorm's epsilon
# role): dead ReLU units have zero variance on the training set.
_FEATURE_EPS = 1e-5


def extract_features(encoder: tf.keras.Model, x: np.ndarray,
                     normalization: Normalization,
                     batch_size: int = 512) -> np.ndarray:
  """float32 [N, feature_dim] encoder outputs (inference mode)."""
  return predict_logits(encoder, x, normalization,
                        batch_size).astype(np.float32)


def feature_normalization(features: np.ndarray) -> Normalization:
  """Per-dimension standardization statistics of [N, D] features."""
  mean = features.mean(axis=0)
  std = np.sqrt(features.var(axis=0) + _FEATURE_EPS)
  return Normalization(tuple(float(m) for m in mean),
                       tuple(float(s) for s in std))


def fraction_key(fraction: float) -> str:
  """0.01 -> "1", 0.1 -> "10", 0.005 -> "0.5" (percent, for summary keys)."""
  return f"{fraction * 100:g}"


def linear_probe(encoder: tf.keras.Model, train: Arrays, test: Arrays,
                 normalization: Normalization, num_classes: int,
                 config: TrainConfig = DEFAULT_PROBE,
                 recorder: Optional[RunRecorder] = None,
                 log_prefix: str = "probe_") -> Dict[str, float]:
  """Logistic regression on frozen, standardized encoder features.

  Features are extracted once (inference mode, no augmentation); a Dense
  head seeded by `config.seed` is trained with `train_classifier`.

  Returns:
    {"accuracy", "macro_f1", "loss"} on `test`, and "train_accuracy".
  """
  f_train = extract_features(encoder, train[0], normalization)
  f_test = extract_features(encoder, test[0], normalization)
  feature_norm = feature_normalization(f_train)
  head = build_head(f_train.shape[1], num_classes, SeedStream(config.seed))
  result = train_classifier(head, (f_train, train[1]), None, feature_norm,
                            num_classes, config, recorder,
                            log_prefix=log_prefix)
  report = evaluate_classifier(head, (f_test, test[1]), feature_norm,
                               num_classes)
  return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
          "loss": report["loss"],
          "train_accuracy": result.history[-1]["train_accuracy"]}


def knn_accuracy(encoder: tf.keras.Model, train: Arrays, test: Arrays,
                 normalization: Normalization, k: int = 20,
                 temperature: float = 0.07, chunk: int = 256) -> float:
  """Weighted cosine k-nearest-neighbour test accuracy.

  Each test image's k most cosine-similar training images vote for their
  labels with weight exp(similarity / temperature) (Wu et al. 2018, the
  usual SSL monitor); no training, so it reflects the embedding alone.
  """
  if k < 1:
    raise UserError(f"knn k must be >= 1, got {k}")
  if not temperature > 0:
    raise UserError(f"knn temperature must be > 0, got {temperature}")
  f_train = _l2_normalize(extract_features(encoder, train[0], normalization))
  f_test = _l2_normalize(extract_features(encoder, test[0], normalization))
  y_train = np.asarray(train[1], np.int64)
  num_classes = int(max(y_train.max(), np.max(test[1])) + 1)
  k = min(k, len(y_train))
  correct = 0
  for start in range(0, len(f_test), chunk):
    sim = f_test[start:start + chunk] @ f_train.T  # [chunk, N_train]
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    top_sim = np.take_along_axis(sim, top, axis=1)
    weights = np.exp((top_sim - 1.0) / temperature)  # shifted: no overflow
    votes = np.zeros((len(sim), num_classes))
    np.add.at(votes, (np.arange(len(sim))[:, None], y_train[top]), weights)
    correct += int(np.sum(votes.argmax(1) == test[1][start:start + chunk]))
  return correct / len(f_test)


def _l2_normalize(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def classifier_from_parts(parts: ModelParts) -> tf.keras.Model:
  """image -> logits model sharing `parts`' encoder and head weights."""
  inputs = tf.keras.Input(shape=parts.encoder.input_shape[1:],
                          dtype=tf.float32, name="image")
  return tf.keras.Model(inputs, parts.head(parts.encoder(inputs)),
                        name="classifier")


def label_efficiency(build_parts: Callable[[], ModelParts],
                     pretrained_encoder: tf.keras.Model,
                     dataset: ImageDataset,
                     normalization: Normalization,
                     fractions: Sequence[float] = (0.01, 0.1),
                     config: TrainConfig = DEFAULT_FINETUNE,
                     seed: int = 0,
                     recorder: Optional[RunRecorder] = None,
                     recipe: FinetuneRecipe = FinetuneRecipe()
                     ) -> Dict[str, Union[float, int]]:
  """Fine-tuning the pretrained encoder vs training from scratch.

  For each fraction, the same stratified labelled subset
  (`labelled_subset(dataset.y_train, fraction, seed)`) trains two copies of
  the same architecture with the same `config`: one whose encoder starts
  from `pretrained_encoder`'s weights, one from random initialisation.
  Both get a fresh head and are scored on the test set.

  Args:
    build_parts: builds a fresh, identically initialised model of the
      pretrained encoder's architecture (e.g. a closure over
      `build_model_parts`).
    pretrained_encoder: its weights seed the fine-tuned encoder.
    dataset: labels come from `y_train`, scores from the test set.
    normalization: input statistics (the same the pretraining used).
    fractions: shares of the training labels, each in (0, 1].
    config: fine-tuning and from-scratch training settings.
    seed: picks the labelled subset.
    recorder: gets the training curves (prefixed by kind and percent).
    recipe: the fine-tuned copy's schedule (head first, lr scale).

  Returns:
    `finetune_accuracy_{pct}`, `supervised_accuracy_{pct}` and
    `labelled_examples_{pct}` for each fraction (pct = percent, e.g. "1").
  """
  results: Dict[str, Union[float, int]] = {}
  for fraction in fractions:
    if not 0.0 < fraction <= 1.0:
      raise UserError(f"label fraction must be in (0, 1], got {fraction}")
    pct = fraction_key(fraction)
    idx = labelled_subset(dataset.y_train, fraction, seed)
    labelled = (dataset.x_train[idx], dataset.y_train[idx])
    results[f"labelled_examples_{pct}"] = int(len(idx))
    for kind in ("finetune", "supervised"):
      parts = build_parts()
      model = classifier_from_parts(parts)
      if kind == "finetune":
        parts.encoder.set_weights(pretrained_encoder.get_weights())
        _finetune(model, parts, labelled, normalization, dataset.num_classes,
                  config, recipe, recorder, pct)
      else:
        train_classifier(model, labelled, None, normalization,
                         dataset.num_classes, config, recorder,
                         log_prefix=f"{kind}_{pct}_")
      report = evaluate_classifier(model, (dataset.x_test, dataset.y_test),
                                   normalization, dataset.num_classes)
      results[f"{kind}_accuracy_{pct}"] = report["accuracy"]
      logging.info("%s%% labels (%d examples): %s test accuracy %.4f", pct,
                   len(idx), kind, report["accuracy"])
  return results


def _finetune(model: tf.keras.Model, parts: ModelParts, labelled: Arrays,
              normalization: Normalization, num_classes: int,
              config: TrainConfig, recipe: FinetuneRecipe,
              recorder: Optional[RunRecorder], pct: str) -> None:
  """`recipe.head_epochs` of the head on the frozen encoder (which also
  keeps its BatchNorm statistics), then every layer at the scaled lr."""
  if recipe.head_epochs:
    parts.encoder.trainable = False
    train_classifier(model, labelled, None, normalization, num_classes,
                     dataclasses.replace(config, epochs=recipe.head_epochs),
                     recorder, log_prefix=f"finetune_head_{pct}_")
    parts.encoder.trainable = True
  optimizer = dataclasses.replace(
      config.optimizer,
      learning_rate=config.optimizer.learning_rate * recipe.lr_scale)
  train_classifier(model, labelled, None, normalization, num_classes,
                   dataclasses.replace(config, optimizer=optimizer),
                   recorder, log_prefix=f"finetune_{pct}_")


def plot_embeddings(encoder: tf.keras.Model, x: np.ndarray, y: np.ndarray,
                    path: Union[str, os.PathLike],
                    normalization: Normalization,
                    max_points: int = 2000, seed: int = 0, title: str = "",
                    class_names: Optional[Sequence[str]] = None) -> int:
  """t-SNE of the encoder's features on a seeded subsample, as a PNG.

  Returns:
    The number of points plotted.
  """
  # Imported lazily: scikit-learn's manifold module and matplotlib are slow
  # to import, and pyplot's global state would leak into callers.
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top

  if len(x) < 4:
    raise UserError(f"t-SNE needs at least 4 points, got {len(x)}")
  keep = np.sort(np.random.default_rng(seed).permutation(len(x))[:max_points])
  features = extract_features(encoder, x[keep], normalization)
  labels = np.asarray(y)[keep]
  # Perplexity must stay below the number of points (sklearn's check).
  perplexity = float(min(30.0, (len(keep) - 1) / 3.0))
  points = TSNE(n_components=2, perplexity=perplexity, init="pca",
                learning_rate="auto", random_state=seed).fit_transform(
                    features.astype(np.float64))
  fig = Figure(figsize=(7.0, 6.0))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  classes = np.unique(labels)
  cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
  for i, c in enumerate(classes):
    mask = labels == c
    name = class_names[c] if class_names is not None else str(c)
    ax.scatter(points[mask, 0], points[mask, 1], s=4, color=cmap(i % cmap.N),
               label=name)
  if len(classes) <= 20:
    ax.legend(markerscale=3, fontsize=7, loc="best")
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title or f"t-SNE of encoder features ({len(keep)} points)")
  directory = os.path.dirname(os.fspath(path))
  if directory:
    os.makedirs(directory, exist_ok=True)
  fig.tight_layout()
  with atomic_output(path) as tmp:
    fig.savefig(tmp, format="png", dpi=100)
  return int(len(keep))
