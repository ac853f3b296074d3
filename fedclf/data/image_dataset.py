"""Dataset records, the data-directory convention and `load_dataset`.

Every loader returns an `ImageDataset`: float32 images in [0, 1] shaped
[N, H, W, C] plus int64 labels, held in memory. The datasets fedclf simulates
on (MNIST-sized to a CIFAR-sized slice) fit comfortably, and arrays make
partitioning by index trivial; tf.data pipelines are built on top
(`fedclf.data.preprocess`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import List, Optional, Tuple

import numpy as np

from fedclf.errors import UserError
from fedclf.registry import DATASETS

DATA_DIR_ENV = "FEDCLF_DATA_DIR"


def default_data_dir() -> str:
  return os.environ.get(DATA_DIR_ENV) or os.path.join(
      os.path.expanduser("~"), ".cache", "fedclf")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What to load. Limits take a seeded random slice (for tests and demos)."""
  name: str
  data_dir: str = ""  # "" means default_data_dir()
  path: str = ""  # image_folder: the folder of class subfolders
  image_size: int = 0  # 0 keeps the native size; else resize to a square
  train_limit: int = 0  # 0 means all
  test_limit: int = 0
  seed: int = 0
  download: bool = True  # allow tensorflow-datasets / TFF downloads
  # synthetic only
  synthetic_shape: Tuple[int, int, int] = (28, 28, 1)
  synthetic_classes: int = 10
  synthetic_train: int = 2000
  synthetic_test: int = 500

  def resolved_data_dir(self) -> str:
    return os.path.expanduser(self.data_dir or default_data_dir())

  def data_dir_origin(self) -> str:
    """Where `resolved_data_dir` comes from, for error messages."""
    if self.data_dir:
      return "--data_dir"
    if os.environ.get(DATA_DIR_ENV):
      return f"${DATA_DIR_ENV}"
    return f"the default; ${DATA_DIR_ENV} is not set"


@dataclasses.dataclass
class ImageDataset:
  """In-memory image classification data."""
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  class_names: List[str]
  source: str
  # Natural clients (e.g. EMNIST writers): one id per training example.
  train_client_ids: Optional[np.ndarray] = None

  @property
  def input_shape(self) -> Tuple[int, int, int]:
    return tuple(int(d) for d in self.x_train.shape[1:])

  def channel_stats(self) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the training images (for normalization)."""
    mean = self.x_train.mean(axis=(0, 1, 2))
    std = self.x_train.std(axis=(0, 1, 2))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)

  def describe(self) -> dict:
    return {
        "name": self.name,
        "source": self.source,
        "train_examples": int(len(self.y_train)),
        "test_examples": int(len(self.y_test)),
        "input_shape": list(self.input_shape),
        "num_classes": self.num_classes,
        "natural_clients": (None if self.train_client_ids is None else int(
            len(np.unique(self.train_client_ids)))),
    }


def make_image_dataset(name: str, source: str, x_train, y_train, x_test,
                       y_test, class_names: List[str],
                       train_client_ids=None) -> ImageDataset:
  """Normalizes dtype/shape conventions: float32 [0,1] NHWC, int64 labels."""

  def images(x):
    x = np.asarray(x)
    if x.dtype == np.uint8:
      x = x.astype(np.float32) / 255.0
    x = x.astype(np.float32, copy=False)
    if x.ndim == 3:
      x = x[..., None]
    return x

  return ImageDataset(
      name=name,
      x_train=images(x_train),
      y_train=np.asarray(y_train).astype(np.int64).reshape(-1),
      x_test=images(x_test),
      y_test=np.asarray(y_test).astype(np.int64).reshape(-1),
      num_classes=len(class_names),
      class_names=list(class_names),
      source=source,
      train_client_ids=(None if train_client_ids is None else
                        np.asarray(train_client_ids)),
  )


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of [N,H,W,C] float images to size x size, in chunks."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if x.shape[1] == size and x.shape[2] == size:
    return x
  out = np.empty((len(x), size, size, x.shape[3]), np.float32)
  chunk = 4096
  for start in range(0, len(x), chunk):
    out[start:start + chunk] = tf.image.resize(
        x[start:start + chunk], (size, size), antialias=True).numpy()
  return np.clip(out, 0.0, 1.0)


def _take(n: int, limit: int, rng: np.random.Generator) -> Optional[np.ndarray]:
  if limit <= 0 or limit >= n:
    return None
  return np.sort(rng.permutation(n)[:limit])


def load_dataset(config: DataConfig) -> ImageDataset:
  """Loads a registered dataset, then applies limits and resizing."""
  if config.train_limit < 0 or config.test_limit < 0:
    raise UserError("train_limit and test_limit must be >= 0")
  if config.image_size < 0:
    raise UserError(f"image_size must be >= 0, got {config.image_size}")
  loader = DATASETS.get(config.name)
  ds = loader(config)
  # The slice depends only on the data seed, so two runs comparing algorithms
  # on "the first 1,000 examples" see the same 1,000 examples.
  rng = np.random.default_rng(config.seed)
  train_idx = _take(len(ds.y_train), config.train_limit, rng)
  if train_idx is not None:
    ds.x_train, ds.y_train = ds.x_train[train_idx], ds.y_train[train_idx]
    if ds.train_client_ids is not None:
      ds.train_client_ids = ds.train_client_ids[train_idx]
  test_idx = _take(len(ds.y_test), config.test_limit, rng)
  if test_idx is not None:
    ds.x_test, ds.y_test = ds.x_test[test_idx], ds.y_test[test_idx]
  if config.image_size:
    ds.x_train = resize_images(ds.x_train, config.image_size)
    ds.x_test = resize_images(ds.x_test, config.image_size)
  return ds
