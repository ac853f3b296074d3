"""Deployment: SavedModel for TF Serving, TFLite (float, int8), TF.js, each
checked against the Keras model; a model card per exported version.

    python -m fedclf.export --run_dir=results/baselines/mnist_cnn \
        --model_name=mnist_cnn --export_dir=exports --out_dir=results/export
"""

# Loaded on first use (PEP 562), not here: `python -m fedclf.export` runs this
# file first, and its --help must answer without importing TensorFlow.
import importlib

_SOURCES = {
    "ExportConfig": "fedclf.export.pipeline",
    "export_version": "fedclf.export.pipeline",
    "FORMATS": "fedclf.export.pipeline",
    "measure": "fedclf.export.pipeline",
    "run_export": "fedclf.export.pipeline",
    "write_table": "fedclf.export.pipeline",
    "PixelClassifier": "fedclf.export.serving",
    "save_serving_model": "fedclf.export.serving",
    "write_version": "fedclf.export.serving",
}
__all__ = sorted(_SOURCES)


def __getattr__(name):
  if name not in _SOURCES:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module(_SOURCES[name]), name)
  globals()[name] = value  # Looked up once.
  return value
