"""File integrity: every real data file is checked against a known md5.

IDX files are checked on their *uncompressed* content because redistributed
copies (Debian's Fashion-MNIST, for one) recompress the official files: the
.gz bytes differ while the data are identical.
"""

from __future__ import annotations

import gzip
import hashlib
import os

from fedclf.errors import DataFileError

# Keys are paths relative to the data directory; values are md5 of the
# uncompressed content for .gz files and of the file itself otherwise.
KNOWN_MD5 = {
    "mnist/train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "mnist/train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "mnist/t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "mnist/t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
    "fashion_mnist/train-images-idx3-ubyte.gz":
        "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "fashion_mnist/train-labels-idx1-ubyte.gz":
        "9018921c3c673c538a1fc5bad174d6f9",
    "fashion_mnist/t10k-images-idx3-ubyte.gz":
        "8181f5470baa50b63fa0f6fddb340f0a",
    "fashion_mnist/t10k-labels-idx1-ubyte.gz":
        "15d484375f8d13e6eb1aabb0c3f46965",
    "usps/usps.h5": "355df6b942eb766252e0340bc019b0b9",
    "cifar10/data_batch_1_first4000.bin.gz": "07704ae233cc40e200a600eed4f4e13c",
    "cifar10/test_batch_first1000.bin.gz": "371f65da31ad652f5e24b3699a3e6515",
}


def read_verified(data_dir: str, relative_path: str) -> bytes:
  """Returns the (decompressed) bytes of a data file after checking its md5.

  Raises:
    DataFileError: the file is missing, unreadable or its checksum differs.
  """
  path = os.path.join(data_dir, relative_path)
  expected = KNOWN_MD5.get(relative_path)
  if not os.path.exists(path):
    raise DataFileError(f"missing data file {path}"
                        + (f" (expected md5 {expected})" if expected else ""))
  try:
    with open(path, "rb") as f:
      raw = f.read()
    content = gzip.decompress(raw) if path.endswith(".gz") else raw
  except (OSError, EOFError, gzip.BadGzipFile) as e:
    raise DataFileError(
        f"corrupt data file {path}: {e} (expected md5 {expected})") from None
  if expected is not None:
    actual = hashlib.md5(content).hexdigest()
    if actual != expected:
      raise DataFileError(f"corrupt data file {path}: md5 {actual}, "
                          f"expected {expected}")
  return content


def files_present(data_dir: str, relative_paths) -> bool:
  return all(os.path.exists(os.path.join(data_dir, p)) for p in relative_paths)
