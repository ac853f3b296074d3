"""Reader for the IDX format of MNIST and Fashion-MNIST."""

from __future__ import annotations

import struct

import numpy as np

from fedclf.errors import DataFileError

_IMAGES_MAGIC = 2051
_LABELS_MAGIC = 2049


def parse_idx(content: bytes, name: str) -> np.ndarray:
  """Parses IDX image (magic 2051) or label (2049) content into uint8 arrays."""
  if len(content) < 8:
    raise DataFileError(f"{name}: too short for an IDX header")
  magic, count = struct.unpack(">II", content[:8])
  if magic == _IMAGES_MAGIC:
    rows, cols = struct.unpack(">II", content[8:16])
    shape, offset = (count, rows, cols), 16
  elif magic == _LABELS_MAGIC:
    shape, offset = (count,), 8
  else:
    raise DataFileError(f"{name}: bad IDX magic number {magic}")
  expected = int(np.prod(shape))
  if len(content) - offset != expected:
    raise DataFileError(f"{name}: IDX body has {len(content) - offset} bytes, "
                        f"header says {expected}")
  return np.frombuffer(content, dtype=np.uint8, offset=offset).reshape(shape)
