"""Deployment: SavedModel for TF Serving, TFLite (float, int8), TF.js, each
checked against the Keras model; a model card per exported version.

    python -m fedclf.export --run_dir=results/baselines/mnist_cnn \
        --model_name=mnist_cnn --export_dir=exports --out_dir=results/export
"""

from fedclf.export.pipeline import ExportConfig
from fedclf.export.pipeline import export_version
from fedclf.export.pipeline import FORMATS
from fedclf.export.pipeline import measure
from fedclf.export.pipeline import run_export
from fedclf.export.pipeline import write_table
from fedclf.export.serving import PixelClassifier
from fedclf.export.serving import save_serving_model
from fedclf.export.serving import write_version
