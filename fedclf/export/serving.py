"""SavedModel export for TensorFlow Serving.

The exported model takes what a client has: raw images. Its
`serving_default` signature takes uint8 pixels [batch, H, W, C] and applies
the model's own preprocessing, the normalization the model was trained with
((pixel / 255 - mean) / std, as `fedclf.data` feeds training), so a client
never has to know the training statistics. A second signature, `pixels`,
takes the same pixels as float32 (0..255): TFLite and TF.js convert from it,
because TFLite's integer quantization calibrates float inputs and
TensorFlow.js has no uint8 tensors.

Layout: `<export_dir>/<model_name>/<version>/` (TF Serving's), the version
one more than the largest there. Each version is written under a hidden
temporary name and renamed into place, because TF Serving polls the model
folder and would otherwise try to load a half-written version.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Callable, Dict, Tuple

import numpy as np
import tensorflow as tf

from fedclf.data.preprocess import Normalization
from fedclf.errors import UserError

SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "pixels"
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class PixelClassifier(tf.Module):
  """A Keras classifier behind its own input preprocessing."""

  def __init__(self, model: tf.keras.Model, normalization: Normalization):
    super().__init__(name="pixel_classifier")
    self.model = model
    shape = tuple(int(d) for d in model.input_shape[1:])
    channels = shape[-1]
    if len(normalization.mean) != channels:
      raise UserError(f"normalization has {len(normalization.mean)} "
                      f"channels, the model takes {channels}")
    self.mean = tf.constant(normalization.mean, tf.float32)
    self.std = tf.constant(normalization.std, tf.float32)
    self.pixels = tf.function(
        self._logits_from_pixels,
        input_signature=[tf.TensorSpec((None, *shape), tf.float32,
                                       name="pixels")])
    self.serve = tf.function(
        self._serve, input_signature=[tf.TensorSpec((None, *shape), tf.uint8,
                                                    name="images")])

  def _logits_from_pixels(self, pixels: tf.Tensor) -> Dict[str, tf.Tensor]:
    # The same arithmetic as training: images / 255 (fedclf.data), then
    # (x - mean) / std (fedclf.data.preprocess).
    normalized = (pixels / 255.0 - self.mean) / self.std
    return {"logits": self.model(normalized, training=False)}

  def _serve(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    logits = self._logits_from_pixels(tf.cast(images, tf.float32))["logits"]
    return {"logits": logits,
            "probabilities": tf.nn.softmax(logits),
            "classes": tf.argmax(logits, axis=-1)}

  def signatures(self) -> Dict[str, tf.types.experimental.ConcreteFunction]:
    return {SERVING_SIGNATURE: self.serve.get_concrete_function(),
            PIXELS_SIGNATURE: self.pixels.get_concrete_function()}


def check_model_name(name: str) -> None:
  if not _MODEL_NAME.fullmatch(name or ""):
    raise UserError(f"model name {name!r} must be letters, digits, '_', '.' "
                    "or '-' (it names the TF Serving model folder)")


def next_version(model_dir: str) -> int:
  """One more than the largest numeric version folder (1 when none)."""
  if not os.path.isdir(model_dir):
    return 1
  versions = [int(n) for n in os.listdir(model_dir) if n.isdigit()]
  return max(versions, default=0) + 1


def write_version(export_dir: str, model_name: str,
                  write: Callable[[str], None]) -> Tuple[str, int]:
  """Calls `write(folder)` on a hidden temporary folder, then renames it to
  the next version, `<export_dir>/<model_name>/<version>`; returns (path,
  version). A failed `write` leaves no version behind."""
  check_model_name(model_name)
  model_dir = os.path.join(export_dir, model_name)
  os.makedirs(model_dir, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-", dir=model_dir)
  try:
    write(tmp)
    version = next_version(model_dir)
    path = os.path.join(model_dir, str(version))
    os.rename(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path, version


def save_serving_model(model: tf.keras.Model, normalization: Normalization,
                       path: str) -> None:
  """Saves `model` behind its preprocessing, with both signatures."""
  module = PixelClassifier(model, normalization)
  tf.saved_model.save(module, path, signatures=module.signatures())


def saved_model_cli_show(path: str) -> str:
  """`saved_model_cli show --dir path --all` (the venv's script)."""
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  command = ([cli] if os.path.exists(cli) else
             [sys.executable, "-m",
              "tensorflow.python.tools.saved_model_cli"])
  proc = subprocess.run([*command, "show", "--dir", path, "--all"],
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  if proc.returncode != 0:
    raise RuntimeError(f"saved_model_cli failed: {proc.stderr[-2000:]}")
  return proc.stdout


def check_signature_listed(cli_output: str, shape) -> None:
  """Raises unless saved_model_cli lists the uint8 serving signature."""
  expected_shape = "(-1, " + ", ".join(str(d) for d in shape) + ")"
  block = cli_output.split(f"signature_def['{SERVING_SIGNATURE}']:", 1)
  if len(block) != 2:
    raise RuntimeError(f"saved_model_cli lists no {SERVING_SIGNATURE!r} "
                       "signature")
  head = block[1].split("signature_def[", 1)[0]
  if "DT_UINT8" not in head or expected_shape not in head:
    raise RuntimeError(f"{SERVING_SIGNATURE!r} does not take uint8 images "
                       f"{expected_shape}:\n{head}")


def to_uint8(images: np.ndarray) -> np.ndarray:
  """fedclf's float images in [0, 1] back to the raw pixels they came from."""
  return np.clip(np.round(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)


def serve_logits(path: str, images: np.ndarray,
                 batch_size: int = 500) -> np.ndarray:
  """Logits of the exported SavedModel's serving signature on uint8 images."""
  serve = tf.saved_model.load(path).signatures[SERVING_SIGNATURE]
  out = [serve(images=tf.constant(images[i:i + batch_size]))["logits"].numpy()
         for i in range(0, len(images), batch_size)]
  return np.concatenate(out)
