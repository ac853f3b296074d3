"""TFLite conversion (float and full-integer int8) and its accuracy.

Both flavours convert the exported SavedModel's `pixels` signature, so they
take pixel values 0..255 and carry the model's normalization inside:
- float: float32 pixels in, float32 logits out;
- int8: every op in int8 (TFLITE_BUILTINS_INT8), weights and activations
  calibrated on a representative set of training images; uint8 pixels in
  (the calibrated input range 0..255 gives scale 1, zero point 0: raw
  pixels), int8 logits out.
Accuracy is measured through `tf.lite.Interpreter`, as a device would run it.
"""

from __future__ import annotations

from typing import Iterator, List

import numpy as np
import tensorflow as tf

from fedclf.export.serving import PIXELS_SIGNATURE
from fedclf.results.record import atomic_output

FLAVOURS = ("float", "int8")


def representative_pixels(x_train: np.ndarray, count: int,
                          seed: int) -> np.ndarray:
  """A seeded sample of training images as float32 pixels (0..255)."""
  rng = np.random.default_rng(seed)
  pick = np.sort(rng.permutation(len(x_train))[:min(count, len(x_train))])
  return np.round(x_train[pick] * 255.0).astype(np.float32)


def convert(saved_model_path: str, flavour: str,
            representative: np.ndarray) -> bytes:
  """The TFLite flatbuffer of the SavedModel's pixels signature."""
  if flavour not in FLAVOURS:
    raise ValueError(f"unknown TFLite flavour {flavour!r}")
  converter = tf.lite.TFLiteConverter.from_saved_model(
      saved_model_path, signature_keys=[PIXELS_SIGNATURE])
  if flavour == "int8":
    def samples() -> Iterator[List[np.ndarray]]:
      for image in representative:
        yield [image[None]]
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.int8
  return converter.convert()


def write_tflite(content: bytes, path: str) -> int:
  """Writes the flatbuffer atomically; returns its size in bytes."""
  with atomic_output(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(content)
  return len(content)


def _quantize(values: np.ndarray, detail: dict) -> np.ndarray:
  scale, zero_point = detail["quantization"]
  if not scale:
    return values.astype(detail["dtype"])
  info = np.iinfo(detail["dtype"])
  q = np.round(values / scale + zero_point)
  return np.clip(q, info.min, info.max).astype(detail["dtype"])


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
  scale, zero_point = detail["quantization"]
  if not scale:
    return values.astype(np.float32)
  return (values.astype(np.float32) - zero_point) * scale


def tflite_logits(model_path: str, pixels: np.ndarray,
                  batch_size: int = 250) -> np.ndarray:
  """Runs a converted model on float pixels (0..255) with tf.lite.Interpreter;
  quantized inputs/outputs are (de)quantized with the model's own
  parameters. Returns float logits."""
  interpreter = tf.lite.Interpreter(model_path=model_path)
  input_detail = interpreter.get_input_details()[0]
  outputs = []
  size = None
  for start in range(0, len(pixels), batch_size):
    batch = pixels[start:start + batch_size]
    if size != len(batch):
      size = len(batch)
      interpreter.resize_tensor_input(input_detail["index"],
                                      [size, *batch.shape[1:]])
      interpreter.allocate_tensors()
      input_detail = interpreter.get_input_details()[0]
      output_detail = interpreter.get_output_details()[0]
    interpreter.set_tensor(input_detail["index"],
                           _quantize(batch, input_detail))
    interpreter.invoke()
    outputs.append(_dequantize(interpreter.get_tensor(output_detail["index"]),
                               output_detail))
  return np.concatenate(outputs)
