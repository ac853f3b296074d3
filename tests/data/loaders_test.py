"""Every dataset loader: real files, tensorflow-datasets (mocked), errors."""

import gzip
import os
import shutil
import socket
import sqlite3
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from fedclf.data import availability
from fedclf.data import DataConfig
from fedclf.data import load_dataset
from fedclf.data import loaders
from fedclf.errors import DataFileError
from fedclf.errors import UserError
from fedclf.registry import DATASETS
from fedclf.registry import UnknownNameError

REAL_DATA = os.environ.get("FEDCLF_DATA_DIR", "")
needs_real_data = pytest.mark.skipif(
    not os.path.isdir(os.path.join(REAL_DATA, "mnist")),
    reason="FEDCLF_DATA_DIR with the real files is not set")


def _check(ds, shape, classes, train=None, test=None):
  assert ds.input_shape == shape
  assert ds.num_classes == classes == len(ds.class_names)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
  assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
  assert set(np.unique(ds.y_train)) <= set(range(classes))
  if train is not None:
    assert len(ds.y_train) == train
  if test is not None:
    assert len(ds.y_test) == test


def test_registry_has_all_builtin_datasets():
  assert set(DATASETS.names()) >= {
      "mnist", "fashion_mnist", "usps", "digits", "cifar10", "emnist",
      "image_folder", "synthetic"
  }
  with pytest.raises(UnknownNameError, match="choose one of: cifar10"):
    load_dataset(DataConfig("nope"))


@needs_real_data
def test_mnist_real_files():
  ds = load_dataset(DataConfig("mnist", data_dir=REAL_DATA))
  _check(ds, (28, 28, 1), 10, 60000, 10000)
  assert ds.source.startswith("files:")
  # Known official class counts of the test set.
  assert np.bincount(ds.y_test).tolist() == [
      980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
  assert abs(ds.x_train.mean() * 255 - 33.318) < 0.01


@needs_real_data
def test_fashion_mnist_real_files():
  ds = load_dataset(DataConfig("fashion_mnist", data_dir=REAL_DATA,
                               train_limit=500, test_limit=100))
  _check(ds, (28, 28, 1), 10, 500, 100)


@needs_real_data
def test_usps_real_file():
  ds = load_dataset(DataConfig("usps", data_dir=REAL_DATA))
  _check(ds, (16, 16, 1), 10, 7291, 2007)
  assert np.bincount(ds.y_test).tolist() == [
      359, 264, 198, 166, 200, 160, 170, 147, 166, 177]


@needs_real_data
def test_cifar10_real_subset_and_resize():
  ds = load_dataset(DataConfig("cifar10", data_dir=REAL_DATA, image_size=16,
                               test_limit=50))
  _check(ds, (16, 16, 3), 10, 4000, 50)


def test_digits_is_embedded_and_fixed():
  a = load_dataset(DataConfig("digits", seed=1))
  b = load_dataset(DataConfig("digits", seed=2))
  _check(a, (8, 8, 1), 10, 1437, 360)
  np.testing.assert_array_equal(a.y_test, b.y_test)


def test_synthetic_shapes_and_seed():
  cfg = DataConfig("synthetic", synthetic_shape=(12, 12, 3),
                   synthetic_classes=4, synthetic_train=40, synthetic_test=8)
  a, b = load_dataset(cfg), load_dataset(cfg)
  _check(a, (12, 12, 3), 4, 40, 8)
  np.testing.assert_array_equal(a.x_train, b.x_train)
  with pytest.raises(UserError):
    load_dataset(DataConfig("synthetic", synthetic_classes=1))


def test_limits_are_seeded_slices():
  a = load_dataset(DataConfig("digits", train_limit=100, seed=3))
  b = load_dataset(DataConfig("digits", train_limit=100, seed=3))
  c = load_dataset(DataConfig("digits", train_limit=100, seed=4))
  assert len(a.y_train) == 100
  np.testing.assert_array_equal(a.x_train, b.x_train)
  assert not np.array_equal(a.x_train, c.x_train)
  with pytest.raises(UserError):
    load_dataset(DataConfig("digits", train_limit=-1))


@pytest.mark.parametrize("name,tfds_shape", [("mnist", (28, 28, 1)),
                                             ("fashion_mnist", (28, 28, 1)),
                                             ("cifar10", (32, 32, 3))])
def test_tfds_fallback_with_mock_data(tmp_path, monkeypatch, name,
                                     tfds_shape):
  monkeypatch.setattr(availability, "host_reachable", lambda *a: True)
  with tfds.testing.mock_data(num_examples=6):
    ds = load_dataset(DataConfig(name, data_dir=str(tmp_path)))
  _check(ds, tfds_shape, 10, 6, 6)
  assert ds.source == "tfds"


def test_missing_files_offline_is_one_line_error(tmp_path):
  with pytest.raises(DataFileError) as e:
    load_dataset(DataConfig("mnist", data_dir=str(tmp_path), download=False))
  message = str(e.value)
  assert "\n" not in message
  assert "train-images-idx3-ubyte.gz" in message
  assert "6bbc9ace898e44ae57da46a324031adb" in message


def _offline(monkeypatch):
  """The network probe answers "offline" and tensorflow-datasets must not
  be asked; returns the hosts probed."""
  probed = []

  def probe(host, port=443):
    probed.append((host, port))
    return False

  def no_tfds(*args, **kwargs):
    raise AssertionError("tfds.load called while offline")

  monkeypatch.setattr(availability, "host_reachable", probe)
  monkeypatch.setattr(tfds, "load", no_tfds)
  return probed


@pytest.mark.parametrize("name,files,host", [
    ("mnist", ["mnist/train-images-idx3-ubyte.gz",
               "mnist/t10k-labels-idx1-ubyte.gz",
               "27ae3e4e09519cfbb04c329615203637", "tfds/mnist/"],
     "storage.googleapis.com"),
    ("fashion_mnist", ["fashion_mnist/t10k-images-idx3-ubyte.gz"],
     "fashion-mnist.s3-website.eu-central-1.amazonaws.com"),
    ("cifar10", ["cifar-10-batches-bin", "data_batch_1_first4000.bin.gz",
                 "test_batch_first1000.bin.gz", "tfds/cifar10/"],
     "www.cs.toronto.edu"),
    ("usps", ["usps/usps.h5", "355df6b942eb766252e0340bc019b0b9"],
     "github.com"),
    ("emnist", ["emnist/emnist_all.sqlite"], "storage.googleapis.com"),
])
def test_missing_dataset_offline_fails_at_once_listing_files(
    tmp_path, monkeypatch, name, files, host):
  probed = _offline(monkeypatch)
  start = time.monotonic()
  with pytest.raises(DataFileError) as e:
    load_dataset(DataConfig(name, data_dir=str(tmp_path)))
  assert time.monotonic() - start < 5
  message = str(e.value)
  assert "\n" not in message and message.startswith(f"{name}: ")
  assert f"offline: {host} cannot be reached" in message
  for part in files:
    assert part in message
  assert f"looks in {tmp_path} (--data_dir)" in message
  assert "FEDCLF_DATA_DIR" in message
  assert [h for h, _ in probed] == [host]


def test_nodownload_never_probes_the_network(tmp_path, monkeypatch):
  _offline(monkeypatch)
  monkeypatch.setattr(availability, "host_reachable",
                      lambda *a: pytest.fail("probed with --nodownload"))
  with pytest.raises(DataFileError, match=r"downloads are off: --nodownload"
                     r".*mnist/train-labels-idx1-ubyte.gz.*allow "
                     r"downloads \(--download\)"):
    load_dataset(DataConfig("mnist", data_dir=str(tmp_path), download=False))


def test_prepared_tfds_copy_is_used_without_probing(tmp_path, monkeypatch):
  monkeypatch.setattr(availability, "host_reachable",
                      lambda *a: pytest.fail("probed with a prepared copy"))
  (tmp_path / "tfds" / "mnist" / "3.0.1").mkdir(parents=True)
  (tmp_path / "tfds" / "mnist" / "3.0.1" / "dataset_info.json").write_text(
      "{}")
  with tfds.testing.mock_data(num_examples=4):
    ds = load_dataset(DataConfig("mnist", data_dir=str(tmp_path),
                                 download=False))
  assert ds.source == "tfds" and len(ds.y_train) == 4


def test_tfds_error_is_shortened_at_a_word(tmp_path, monkeypatch):
  monkeypatch.setattr(availability, "host_reachable", lambda *a: True)
  words = " ".join(f"word{i}" for i in range(200))

  def failing_load(*args, **kwargs):
    raise ConnectionError(f"{words}\nsecond line")

  monkeypatch.setattr(tfds, "load", failing_load)
  with pytest.raises(DataFileError) as e:
    load_dataset(DataConfig("mnist", data_dir=str(tmp_path)))
  message = str(e.value)
  assert "\n" not in message and "second line" not in message
  kept = message.split("(ConnectionError: ", 1)[1]
  assert kept.endswith(" ...)")
  assert words.startswith(kept[:-len(" ...)")] + " ")


def test_host_reachable_probes_a_real_socket(monkeypatch):
  for var in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    monkeypatch.delenv(var, raising=False)
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    assert availability.host_reachable("127.0.0.1", port, timeout=2)
  start = time.monotonic()
  assert not availability.host_reachable("127.0.0.1", port, timeout=2)
  assert not availability.host_reachable("fedclf-no-such-host.invalid",
                                         timeout=0.5)
  assert time.monotonic() - start < 3
  # Downloads through a proxy: the proxy is what must answer.
  monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
  monkeypatch.setenv("no_proxy", "")
  assert availability._proxy_for("example.org") == ("127.0.0.1", port)


@needs_real_data
def test_corrupt_file_names_file_and_md5(tmp_path):
  shutil.copytree(os.path.join(REAL_DATA, "mnist"), tmp_path / "mnist")
  target = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
  content = bytearray(gzip.decompress(target.read_bytes()))
  content[100] ^= 1
  target.write_bytes(gzip.compress(bytes(content)))
  with pytest.raises(DataFileError, match="t10k-labels.*expected "
                     "27ae3e4e09519cfbb04c329615203637"):
    load_dataset(DataConfig("mnist", data_dir=str(tmp_path)))
  target.write_bytes(b"not gzip")
  with pytest.raises(DataFileError, match="corrupt data file"):
    load_dataset(DataConfig("mnist", data_dir=str(tmp_path)))


def test_usps_missing_offline(tmp_path):
  with pytest.raises(DataFileError, match="usps.h5"):
    load_dataset(DataConfig("usps", data_dir=str(tmp_path), download=False))


def _write_emnist_fixture(path, writers=3, per_writer=4):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  con = sqlite3.connect(path)
  con.execute("CREATE TABLE examples (split_name TEXT NOT NULL, client_id "
              "TEXT NOT NULL, serialized_example_proto BLOB NOT NULL)")
  con.execute("CREATE TABLE client_metadata (client_id TEXT NOT NULL, "
              "split_name TEXT NOT NULL, num_examples INTEGER NOT NULL)")
  rng = np.random.default_rng(0)
  for split in ("digits_only_train", "digits_only_test"):
    for w in range(writers):
      for i in range(per_writer):
        pixels = np.ones((28, 28), np.float32)
        pixels[10:18, 10:18] = rng.uniform(0, 1, (8, 8))
        example = tf.train.Example(features=tf.train.Features(feature={
            "pixels": tf.train.Feature(float_list=tf.train.FloatList(
                value=pixels.reshape(-1))),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(
                value=[(w + i) % 10])),
        }))
        con.execute("INSERT INTO examples VALUES (?, ?, ?)",
                    (split, f"f{w:04d}", example.SerializeToString()))
      con.execute("INSERT INTO client_metadata VALUES (?, ?, ?)",
                  (f"f{w:04d}", split, per_writer))
  con.commit()
  con.close()


def test_emnist_reads_tff_sqlite_with_writers(tmp_path):
  _write_emnist_fixture(str(tmp_path / loaders.EMNIST_FILE))
  ds = load_dataset(DataConfig("emnist", data_dir=str(tmp_path)))
  _check(ds, (28, 28, 1), 10, 12, 12)
  assert sorted(set(ds.train_client_ids)) == ["f0000", "f0001", "f0002"]
  # Background (1.0 in TFF's file) becomes 0 like MNIST.
  assert ds.x_train[:, 0, 0, 0].max() == 0.0
  assert ds.describe()["natural_clients"] == 3


def test_emnist_missing_offline(tmp_path):
  with pytest.raises(DataFileError, match="emnist_all.sqlite"):
    load_dataset(DataConfig("emnist", data_dir=str(tmp_path), download=False))


def _write_folder(root, classes=("cat", "dog"), n=5, size=(20, 14)):
  from PIL import Image
  rng = np.random.default_rng(0)
  for c in classes:
    os.makedirs(root / c, exist_ok=True)
    for i in range(n):
      Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(
          root / c / f"{i}.png")


def test_image_folder_split_and_resize(tmp_path):
  _write_folder(tmp_path / "imgs")
  ds = load_dataset(DataConfig("image_folder", path=str(tmp_path / "imgs"),
                               image_size=12))
  _check(ds, (12, 12, 3), 2, 8, 2)
  assert ds.class_names == ["cat", "dog"]


def test_image_folder_train_test_and_errors(tmp_path):
  _write_folder(tmp_path / "d" / "train", n=3)
  _write_folder(tmp_path / "d" / "test", n=2)
  ds = load_dataset(DataConfig("image_folder", path=str(tmp_path / "d")))
  _check(ds, (32, 32, 3), 2, 6, 4)
  (tmp_path / "d" / "train" / "cat" / "bad.png").write_bytes(b"garbage")
  with pytest.raises(DataFileError, match="bad.png"):
    load_dataset(DataConfig("image_folder", path=str(tmp_path / "d")))
  with pytest.raises(UserError, match="dataset_path"):
    load_dataset(DataConfig("image_folder"))
  with pytest.raises(DataFileError, match="does not exist"):
    load_dataset(DataConfig("image_folder", path=str(tmp_path / "none")))
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataFileError, match="needs at least two class "
                     "subfolders of images, found 0"):
    load_dataset(DataConfig("image_folder", path=str(tmp_path / "empty")))
  for cls in ("a", "b"):
    (tmp_path / "empty" / cls).mkdir()
  with pytest.raises(DataFileError, match=r"no images .* in the class "
                     r"subfolders of .*empty \(--dataset_path\)"):
    load_dataset(DataConfig("image_folder", path=str(tmp_path / "empty")))
