"""The FedAvg workload that fedclf and its peers (Flower) both run in the
peer benchmark (`python -m benchmarks.federation_bench --items=8`).

It needs only numpy (and a Keras module passed in), never fedclf: the peer
scripts run in their own virtual environment (`.venv-peers`, Flower needs
protobuf 5, fedclf pins 4), and import this module to get the same clients,
examples, model and hyper-parameters as fedclf's side, which builds them
with `benchmarks.measure.make_simulation`. `tests/benchmarks/peers_test.py`
checks that both definitions pick the same examples and the same model.
"""

import gzip
import os
import struct
from typing import List, Tuple

import numpy as np

# (clients per round, examples per client): results/benchmarks.md item 1.
SETTINGS = ((10, 600), (100, 60))
QUICK_SETTINGS = ((10, 60), (20, 12))
BATCH_SIZE = 10
LOCAL_EPOCHS = 1
CLIENT_LR = 0.05  # benchmarks.measure.CLIENT_LR
SEED = 0  # fedclf's data slice and partition seed in make_simulation
MNIST_TRAIN_SIZE = 60000
MNIST_TRAIN_FILES = ("mnist/train-images-idx3-ubyte.gz",
                     "mnist/train-labels-idx1-ubyte.gz")
# McMahan et al.'s CNN: conv5x5(32)-pool-conv5x5(64)-pool-fc512-fc10.
CNN_PARAMETERS = 1663370


def read_idx_gz(path: str, magic: int) -> np.ndarray:
  """The uint8 array of a gzipped IDX file (images 2051, labels 2049)."""
  with gzip.open(path, "rb") as f:
    content = f.read()
  found, count = struct.unpack(">II", content[:8])
  if found != magic:
    raise ValueError(f"{path}: IDX magic {found}, expected {magic}")
  if magic == 2051:
    rows, cols = struct.unpack(">II", content[8:16])
    return np.frombuffer(content, np.uint8, offset=16).reshape(
        count, rows, cols)
  return np.frombuffer(content, np.uint8, offset=8)


def mnist_train_uint8(data_dir: str) -> Tuple[np.ndarray, np.ndarray]:
  """MNIST's 60,000 training images [N, 28, 28] and labels, as uint8, from
  the official files under `data_dir` (where FEDCLF_DATA_DIR points)."""
  images, labels = (os.path.join(data_dir, f) for f in MNIST_TRAIN_FILES)
  return read_idx_gz(images, 2051), read_idx_gz(labels, 2049)


def client_indices(clients: int, examples_per_client: int,
                   seed: int = SEED) -> List[np.ndarray]:
  """Each client's examples as indices into MNIST's training set.

  The same as fedclf's `make_simulation`: a seeded slice of
  clients x examples training images (`load_dataset`'s train_limit), split
  into equal shares by the iid partitioner, both from default_rng(seed),
  each share in ascending order (as `fedclf.partition` returns them).
  """
  total = clients * examples_per_client
  if total < MNIST_TRAIN_SIZE:
    kept = np.sort(np.random.default_rng(seed).permutation(
        MNIST_TRAIN_SIZE)[:total])
  else:
    kept = np.arange(MNIST_TRAIN_SIZE)
  shares = np.array_split(np.random.default_rng(seed).permutation(len(kept)),
                          clients)
  return [kept[np.sort(share)] for share in shares]


def as_model_inputs(images: np.ndarray, labels: np.ndarray):
  """float32 [N, 28, 28, 1] in [0, 1] and int64 labels, as fedclf feeds."""
  return (images.astype(np.float32)[..., None] / 255.0,
          labels.astype(np.int64))


def mcmahan_cnn(keras):
  """The McMahan CNN (fedclf's `cnn` model) with the given Keras module
  (`tf.keras` of either environment), uncompiled, returning logits."""
  layers = keras.layers
  return keras.Sequential([
      keras.Input((28, 28, 1)),
      layers.Conv2D(32, 5, padding="same", activation="relu"),
      layers.MaxPool2D(2, padding="same"),
      layers.Conv2D(64, 5, padding="same", activation="relu"),
      layers.MaxPool2D(2, padding="same"),
      layers.Flatten(),
      layers.Dense(512, activation="relu"),
      layers.Dense(10),
  ])
