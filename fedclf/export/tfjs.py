"""TensorFlow.js conversion and a Node run of the converted model.

The converter (tensorflowjs 4.22.0, the newest that installs beside
TensorFlow 2.14; see BUILD_NOTES.md) turns the exported SavedModel's
`pixels` signature into a graph model: a graph model converts ops, so any
zoo layer works (the layers format would need every Keras layer, e.g.
GroupNormalization, to exist in TF.js). `node_logits` runs it with pure-JS
@tensorflow/tfjs through `node/predict.js`, installing the pinned packages
(`npm ci`, from `node/package-lock.json`) on first use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from fedclf.errors import UserError
from fedclf.export.serving import PIXELS_SIGNATURE

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")


def convert(saved_model_path: str, out_dir: str) -> int:
  """Converts the SavedModel's pixels signature into `out_dir` (model.json
  and weight shards), replacing it; returns the total size in bytes.

  The converter runs in a child process: importing it imports TensorFlow's
  legacy `tensorflow.python.keras`, after which `tf.keras.models.load_model`
  of fedclf's nested models loops forever in the same process.
  """
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-tfjs-", dir=parent)
  try:
    proc = subprocess.run(
        [sys.executable, "-m", "tensorflowjs.converters.converter",
         "--input_format=tf_saved_model",
         f"--signature_name={PIXELS_SIGNATURE}",
         saved_model_path, tmp],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if proc.returncode != 0 or not os.path.exists(
        os.path.join(tmp, "model.json")):
      raise RuntimeError(f"tensorflowjs_converter failed: "
                         f"{proc.stderr[-2000:]}")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return sum(os.path.getsize(os.path.join(out_dir, n))
             for n in os.listdir(out_dir))


def ensure_node_packages(node_dir: str = NODE_DIR) -> None:
  """`npm ci` into `node_dir` unless its node_modules has @tensorflow/tfjs."""
  if shutil.which("node") is None or shutil.which("npm") is None:
    raise UserError("node and npm are needed for the TF.js check (e.g. "
                    "apt-get install nodejs npm)")
  if os.path.isdir(os.path.join(node_dir, "node_modules", "@tensorflow",
                                "tfjs")):
    return
  proc = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"],
                        cwd=node_dir, capture_output=True, text=True,
                        timeout=600)
  if proc.returncode != 0:
    tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
    raise UserError(f"npm ci in {node_dir} failed: {tail[0]}")


def node_logits(tfjs_dir: str, images_uint8: np.ndarray,
                node_dir: str = NODE_DIR) -> np.ndarray:
  """Logits of the converted model on uint8 images [N, H, W, C], computed
  by TensorFlow.js in Node."""
  ensure_node_packages(node_dir)
  images = np.ascontiguousarray(images_uint8, np.uint8)
  with tempfile.TemporaryDirectory(prefix="fedclf-tfjs-") as tmp:
    pixels = os.path.join(tmp, "pixels.bin")
    out = os.path.join(tmp, "predictions.json")
    images.tofile(pixels)
    proc = subprocess.run(
        ["node", os.path.join(node_dir, "predict.js"),
         os.path.abspath(tfjs_dir), pixels, out,
         *(str(d) for d in images.shape)],
        cwd=node_dir, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
      raise RuntimeError(f"node predict.js failed: {proc.stderr[-2000:]}")
    with open(out) as f:
      result = json.load(f)
  return np.asarray(result["logits"], np.float32)
