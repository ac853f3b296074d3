"""The built-in datasets.

Each loader reads real files from the data directory when they are there
(checking their md5), and otherwise downloads through tensorflow-datasets
(or TFF for federated EMNIST). Before any download the loader checks that
downloads are allowed and the host answers (`availability`): with
`--nodownload` or offline, a missing file is at once a one-line
`DataFileError` naming the files, their md5 and the folder searched.
"""

from __future__ import annotations

import glob
import io
import os
import sqlite3
import textwrap
from typing import List, Sequence, Tuple

import numpy as np

from fedclf.data import availability
from fedclf.data import checksums
from fedclf.data import idx
from fedclf.data.image_dataset import DataConfig
from fedclf.data.image_dataset import ImageDataset
from fedclf.data.image_dataset import make_image_dataset
from fedclf.errors import DataFileError
from fedclf.errors import UserError
from fedclf.registry import DATASETS

DIGIT_NAMES = [str(i) for i in range(10)]
FASHION_NAMES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
    "sneaker", "bag", "ankle boot"
]
CIFAR10_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
    "ship", "truck"
]


# Where tensorflow-datasets downloads each dataset from (the builders'
# URLs: host, port), probed before a download; any other dataset is probed
# at tfds's own bucket of prepared data, which it tries first.
TFDS_HOSTS = {
    "mnist": ("storage.googleapis.com", 443),
    "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com",
                      80),
    "cifar10": ("www.cs.toronto.edu", 443),
    "mnist_corrupted": ("zenodo.org", 443),
}
TFDS_BUCKET = ("storage.googleapis.com", 443)
# tensorflow-datasets' errors can run to pages; the first line, shortened
# at a word boundary, says enough.
TFDS_ERROR_CHARS = 300


def tfds_prepared(tfds_name: str, tfds_dir: str) -> bool:
  """Whether `tfds_dir` holds a prepared copy of `tfds_name` (any version).

  Read from the file system: building a tfds builder to ask it costs ~20 s
  offline (it looks for dataset metadata on Google Cloud Storage).
  """
  pattern = os.path.join(glob.escape(tfds_dir), tfds_name, "*",
                         "dataset_info.json")
  return bool(glob.glob(pattern))


def load_tfds(tfds_name: str, config: DataConfig,
              missing: Sequence[str]) -> Tuple[np.ndarray, ...]:
  """(x_train, y_train, x_test, y_test) from tensorflow-datasets: its
  prepared copy under `<data_dir>/tfds`, else downloaded and prepared there.

  `missing` lists the local files looked for first (relative to the data
  directory, md5 where known). Without a prepared copy, the download is
  tried only if allowed and the host answers (`availability`); otherwise
  the one-line error names `missing`, the prepared copy and the folder.
  """
  data_dir = config.resolved_data_dir()
  tfds_dir = os.path.join(data_dir, "tfds")
  if not tfds_prepared(tfds_name, tfds_dir):
    host, port = TFDS_HOSTS.get(tfds_name.split("/")[0], TFDS_BUCKET)
    prepared = f"a prepared tensorflow-datasets copy tfds/{tfds_name}/"
    availability.require_download(
        config.name, [*missing, f"or {prepared}" if missing else prepared],
        data_dir, config.data_dir_origin(), host, config.download, port)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    splits = tfds.load(
        tfds_name,
        split=["train", "test"],
        data_dir=tfds_dir,
        as_supervised=True,
        download=config.download)
  except Exception as e:  # pylint: disable=broad-except
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    looked_for = (f"missing {'; '.join(missing)} in {data_dir}, and "
                  if missing else "")
    raise DataFileError(
        f"{config.name}: {looked_for}"
        f"tensorflow-datasets could not provide '{tfds_name}' "
        f"({type(e).__name__}: "
        f"{textwrap.shorten(first_line, TFDS_ERROR_CHARS, placeholder=' ...')}"
        f")") from None
  arrays = []
  for split in splits:
    xs, ys = [], []
    for x, y in tfds.as_numpy(split):
      xs.append(x)
      ys.append(y)
    arrays.extend([np.stack(xs), np.asarray(ys)])
  return tuple(arrays)


def _with_md5(relative_path: str) -> str:
  return f"{relative_path} (md5 {checksums.KNOWN_MD5[relative_path]})"


def _load_idx_dataset(config: DataConfig, folder: str, tfds_name: str,
                      class_names: List[str]) -> ImageDataset:
  files = [
      f"{folder}/{prefix}-{kind}-idx{dim}-ubyte.gz"
      for prefix in ("train", "t10k")
      for kind, dim in (("images", 3), ("labels", 1))
  ]
  data_dir = config.resolved_data_dir()
  if checksums.files_present(data_dir, files):
    x_tr, y_tr, x_te, y_te = (
        idx.parse_idx(checksums.read_verified(data_dir, f), f) for f in files)
    source = f"files:{os.path.join(data_dir, folder)}"
  else:
    missing = [_with_md5(f) for f in files
               if not os.path.exists(os.path.join(data_dir, f))]
    x_tr, y_tr, x_te, y_te = load_tfds(tfds_name, config, missing)
    source = "tfds"
  return make_image_dataset(config.name, source, x_tr, y_tr, x_te, y_te,
                            class_names)


@DATASETS.register("mnist")
def load_mnist(config: DataConfig) -> ImageDataset:
  return _load_idx_dataset(config, "mnist", "mnist", DIGIT_NAMES)


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(config: DataConfig) -> ImageDataset:
  return _load_idx_dataset(config, "fashion_mnist", "fashion_mnist",
                           FASHION_NAMES)


USPS_FILE = "usps/usps.h5"
USPS_URL = ("https://github.com/niuers/Learning-From-Data-A-Short-Course/raw/"
            "master/data/usps.h5")
USPS_HOST = "github.com"


@DATASETS.register("usps")
def load_usps(config: DataConfig) -> ImageDataset:
  """USPS 16x16 digits in [0, 1] from `usps/usps.h5`.

  tensorflow-datasets has no USPS; when the file is missing and downloads
  are allowed it is fetched from its public copy and checked against the md5.
  """
  import h5py  # pylint: disable=g-import-not-at-top
  data_dir = config.resolved_data_dir()
  path = os.path.join(data_dir, USPS_FILE)
  if not os.path.exists(path):
    availability.require_download(config.name, [_with_md5(USPS_FILE)],
                                  data_dir, config.data_dir_origin(),
                                  USPS_HOST, config.download)
    _download(USPS_URL, path, checksums.KNOWN_MD5[USPS_FILE])
  content = checksums.read_verified(data_dir, USPS_FILE)
  try:
    with h5py.File(io.BytesIO(content), "r") as f:
      arrays = [
          np.asarray(f[split][key])
          for split in ("train", "test")
          for key in ("data", "target")
      ]
  except (OSError, KeyError) as e:
    raise DataFileError(f"corrupt data file {path}: {e}") from None
  x_tr, y_tr, x_te, y_te = arrays
  return make_image_dataset(config.name, f"files:{path}",
                            x_tr.reshape(-1, 16, 16), y_tr,
                            x_te.reshape(-1, 16, 16), y_te, DIGIT_NAMES)


def _download(url: str, path: str, md5: str) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path), exist_ok=True)
  try:
    tf.keras.utils.get_file(
        os.path.abspath(path), origin=url, md5_hash=md5, hash_algorithm="md5")
  except Exception as e:  # pylint: disable=broad-except
    raise DataFileError(f"missing data file {path} (expected md5 {md5}) and "
                        f"the download from {url} failed: "
                        f"{type(e).__name__}") from None


DIGITS_TEST_FRACTION = 0.2


@DATASETS.register("digits")
def load_digits(config: DataConfig) -> ImageDataset:
  """scikit-learn's embedded 8x8 digits (1,797 images, no download).

  The train/test split is fixed (seed 0, stratified, 20% test) and does not
  follow the run seed, so every run is scored on the same test images.
  """
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  digits = sk_datasets.load_digits()
  x = (digits.images / 16.0).astype(np.float32)
  x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
      x, digits.target, test_size=DIGITS_TEST_FRACTION, random_state=0,
      stratify=digits.target)
  return make_image_dataset(config.name, "sklearn.load_digits", x_tr, y_tr,
                            x_te, y_te, DIGIT_NAMES)


CIFAR_RECORD = 3073
CIFAR_FULL_DIR = "cifar10/cifar-10-batches-bin"
CIFAR_SUBSET = ("cifar10/data_batch_1_first4000.bin.gz",
                "cifar10/test_batch_first1000.bin.gz")


def parse_cifar_binary(content: bytes, name: str) -> Tuple[np.ndarray, ...]:
  """Official CIFAR-10 binary records: 1 label byte + 3x1024 planar RGB."""
  if not content or len(content) % CIFAR_RECORD:
    raise DataFileError(f"corrupt data file {name}: {len(content)} bytes is "
                        f"not a multiple of the {CIFAR_RECORD}-byte record")
  records = np.frombuffer(content, np.uint8).reshape(-1, CIFAR_RECORD)
  labels = records[:, 0]
  if labels.max() > 9:
    raise DataFileError(f"corrupt data file {name}: label {labels.max()} > 9")
  images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images, labels


@DATASETS.register("cifar10")
def load_cifar10(config: DataConfig) -> ImageDataset:
  """CIFAR-10 from the official binary files, the real subset, or tfds.

  Looked for in order: the full official `cifar-10-batches-bin/` folder, the
  4,000/1,000 real subset shipped offline, then tensorflow-datasets.
  """
  data_dir = config.resolved_data_dir()
  full = [f"{CIFAR_FULL_DIR}/data_batch_{i}.bin" for i in range(1, 6)]
  full_test = f"{CIFAR_FULL_DIR}/test_batch.bin"
  if checksums.files_present(data_dir, full + [full_test]):
    parts = [
        parse_cifar_binary(checksums.read_verified(data_dir, f), f)
        for f in full
    ]
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    x_te, y_te = parse_cifar_binary(
        checksums.read_verified(data_dir, full_test), full_test)
    source = f"files:{os.path.join(data_dir, CIFAR_FULL_DIR)}"
  elif checksums.files_present(data_dir, CIFAR_SUBSET):
    (x_tr, y_tr), (x_te, y_te) = (
        parse_cifar_binary(checksums.read_verified(data_dir, f), f)
        for f in CIFAR_SUBSET)
    source = f"files:{os.path.join(data_dir, 'cifar10')} (4000/1000 subset)"
  else:
    x_tr, y_tr, x_te, y_te = load_tfds("cifar10", config, [
        f"{CIFAR_FULL_DIR}/{{data_batch_1..5,test_batch}}.bin",
        f"or the subset {' and '.join(_with_md5(f) for f in CIFAR_SUBSET)}"])
    source = "tfds"
  return make_image_dataset(config.name, source, x_tr, y_tr, x_te, y_te,
                            CIFAR10_NAMES)


EMNIST_FILE = "emnist/emnist_all.sqlite"
EMNIST_HOST = "storage.googleapis.com"  # TFF's tff-datasets-public bucket


def read_emnist_sqlite(path: str, split: str) -> Tuple[np.ndarray, ...]:
  """Reads TFF's federated EMNIST SQLite file without importing TFF.

  The file has a table `examples(split_name, client_id,
  serialized_example_proto)` of tf.train.Example protos with `pixels`
  (28x28 float, 1.0 is background) and `label`. Returns images, labels and
  writer ids.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
      rows = con.execute(
          "SELECT client_id, serialized_example_proto FROM examples "
          "WHERE split_name = ? ORDER BY rowid", (split,)).fetchall()
  except sqlite3.Error as e:
    raise DataFileError(f"corrupt data file {path}: {e}") from None
  if not rows:
    raise DataFileError(f"{path} has no examples for split {split!r}")
  parsed = tf.io.parse_example(
      [r[1] for r in rows], {
          "pixels": tf.io.FixedLenFeature((28, 28), tf.float32),
          "label": tf.io.FixedLenFeature((), tf.int64),
      })
  # TFF's EMNIST stores ink as 0 on a background of 1; invert to match MNIST.
  images = 1.0 - parsed["pixels"].numpy()
  return images, parsed["label"].numpy(), np.asarray([r[0] for r in rows])


@DATASETS.register("emnist")
def load_emnist(config: DataConfig) -> ImageDataset:
  """TFF's federated EMNIST digits with its natural writer clients.

  Test examples are pooled across writers (a centralized test set).
  """
  data_dir = config.resolved_data_dir()
  path = os.path.join(data_dir, EMNIST_FILE)
  if not os.path.exists(path):
    availability.require_download(config.name, [EMNIST_FILE], data_dir,
                                  config.data_dir_origin(), EMNIST_HOST,
                                  config.download)
    try:
      # Importing TFF is slow (~40 s); only done for the download.
      import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
      tff.simulation.datasets.emnist.load_data(
          only_digits=True, cache_dir=os.path.dirname(path))
    except Exception as e:  # pylint: disable=broad-except
      raise DataFileError(
          f"missing data file {path}, and TFF's EMNIST download failed: "
          f"{type(e).__name__}") from None
  x_tr, y_tr, writers = read_emnist_sqlite(path, "digits_only_train")
  x_te, y_te, _ = read_emnist_sqlite(path, "digits_only_test")
  return make_image_dataset(config.name, f"files:{path}", x_tr, y_tr, x_te,
                            y_te, DIGIT_NAMES, train_client_ids=writers)


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
DEFAULT_FOLDER_IMAGE_SIZE = 32
FOLDER_TEST_FRACTION = 0.2


def _read_class_folders(root: str, class_names: List[str], size: int,
                        channels: int) -> Tuple[np.ndarray, np.ndarray]:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  mode = "L" if channels == 1 else "RGB"
  images, labels = [], []
  for label, cls in enumerate(class_names):
    folder = os.path.join(root, cls)
    if not os.path.isdir(folder):
      continue
    for fname in sorted(os.listdir(folder)):
      if not fname.lower().endswith(IMAGE_EXTENSIONS):
        continue
      fpath = os.path.join(folder, fname)
      try:
        with Image.open(fpath) as im:
          im = im.convert(mode).resize((size, size), Image.BILINEAR)
          images.append(np.asarray(im, np.uint8))
      except OSError as e:
        raise DataFileError(f"corrupt image file {fpath}: {e}") from None
      labels.append(label)
  if not images:
    raise DataFileError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the "
                        f"class subfolders of {root} (--dataset_path)")
  return np.stack(images), np.asarray(labels)


def _detect_channels(root: str, class_names: List[str]) -> int:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for cls in class_names:
    folder = os.path.join(root, cls)
    for fname in sorted(os.listdir(folder)):
      if fname.lower().endswith(IMAGE_EXTENSIONS):
        try:
          with Image.open(os.path.join(folder, fname)) as im:
            return 1 if im.mode in ("L", "1", "I;16", "I") else 3
        except OSError:
          continue
  return 3


@DATASETS.register("image_folder")
def load_image_folder(config: DataConfig) -> ImageDataset:
  """ImageNet-style folders: `<path>/<class>/*.jpg`, or `<path>/train/<class>`
  and `<path>/test/<class>`. Without a test folder, a fixed stratified 20%
  (seed 0) becomes the test set. Images are resized to `image_size`
  (default 32) while loading so arbitrarily large folders stay bounded.
  """
  root = os.path.expanduser(config.path)
  if not config.path:
    raise UserError("dataset image_folder needs --dataset_path=<folder of "
                    "class subfolders>")
  if not os.path.isdir(root):
    raise DataFileError(f"image folder {root} (--dataset_path) does not "
                        f"exist")
  size = config.image_size or DEFAULT_FOLDER_IMAGE_SIZE
  has_splits = os.path.isdir(os.path.join(root, "train")) and os.path.isdir(
      os.path.join(root, "test"))
  train_root = os.path.join(root, "train") if has_splits else root
  class_names = sorted(
      d for d in os.listdir(train_root)
      if os.path.isdir(os.path.join(train_root, d)))
  if len(class_names) < 2:
    raise DataFileError(f"image folder {train_root} (--dataset_path) needs "
                        f"at least two class subfolders of images, found "
                        f"{len(class_names)}")
  channels = _detect_channels(train_root, class_names)
  x, y = _read_class_folders(train_root, class_names, size, channels)
  if has_splits:
    x_te, y_te = _read_class_folders(
        os.path.join(root, "test"), class_names, size, channels)
    x_tr, y_tr = x, y
  else:
    rng = np.random.default_rng(0)
    test_mask = np.zeros(len(y), bool)
    for c in np.unique(y):
      members = rng.permutation(np.flatnonzero(y == c))
      test_mask[members[:max(1, int(round(len(members) *
                                           FOLDER_TEST_FRACTION)))]] = True
    x_tr, y_tr, x_te, y_te = x[~test_mask], y[~test_mask], x[test_mask], y[
        test_mask]
  return make_image_dataset(config.name, f"folder:{root}", x_tr, y_tr, x_te,
                            y_te, class_names)


@DATASETS.register("synthetic")
def load_synthetic(config: DataConfig) -> ImageDataset:
  """Class prototypes plus noise: learnable, seeded, any shape and size."""
  h, w, c = config.synthetic_shape
  k = config.synthetic_classes
  if min(h, w, c) < 1 or k < 2 or config.synthetic_train < k or (
      config.synthetic_test < 1):
    raise UserError("synthetic data needs a positive shape, >= 2 classes and "
                    "at least one training example per class")
  rng = np.random.default_rng(config.seed + 7919)
  prototypes = rng.uniform(0.0, 1.0, size=(k, h, w, c)).astype(np.float32)

  def draw(n):
    labels = np.arange(n) % k
    rng.shuffle(labels)
    noise = rng.normal(0.0, 0.35, size=(n, h, w, c)).astype(np.float32)
    return np.clip(prototypes[labels] + noise, 0.0, 1.0), labels

  x_tr, y_tr = draw(config.synthetic_train)
  x_te, y_te = draw(config.synthetic_test)
  return make_image_dataset(config.name, "generated", x_tr, y_tr, x_te, y_te,
                            [f"class_{i}" for i in range(k)])
