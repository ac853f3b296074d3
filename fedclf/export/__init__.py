"""Deployment: SavedModel for TF Serving, TFLite (float, int8), TF.js, each
checked against the Keras model; a model card per exported version.

    python -m fedclf.export --run_dir=results/baselines/mnist_cnn \
        --model_name=mnist_cnn --export_dir=exports --out_dir=results/export
"""

# Loaded on first use: see fedclf.lazy_exports.
from fedclf import lazy_exports

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

__getattr__ = lazy_exports.loader(__name__, _SOURCES, globals())
