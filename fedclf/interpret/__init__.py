"""Interpretation: saliency, SmoothGrad, integrated gradients (with the
completeness check), Grad-CAM, the model-parameter randomization test,
model comparison and model pictures.

    python -m fedclf.interpret --run_dir=results/baselines/mnist_cnn \
        --compare_run_dir=results/mcmahan/fedavg_iid_e5_b10_lr0.1 \
        --out_dir=results/interpret
"""

# Loaded on first use: see fedclf.lazy_exports.
from fedclf import lazy_exports

_SOURCES = {
    "conv_layer_names": "fedclf.interpret.attribution",
    "grad_cam": "fedclf.interpret.attribution",
    "heatmap": "fedclf.interpret.attribution",
    "integrated_gradients": "fedclf.interpret.attribution",
    "IntegratedGradients": "fedclf.interpret.attribution",
    "last_conv_layer_name": "fedclf.interpret.attribution",
    "smoothgrad": "fedclf.interpret.attribution",
    "tapped_forward": "fedclf.interpret.attribution",
    "vanilla_gradients": "fedclf.interpret.attribution",
    "InterpretConfig": "fedclf.interpret.report",
    "METHODS": "fedclf.interpret.report",
    "run_interpret": "fedclf.interpret.report",
    "cascading_randomization": "fedclf.interpret.sanity",
    "RandomizationResult": "fedclf.interpret.sanity",
    "map_similarity": "fedclf.interpret.similarity",
}
__all__ = sorted(_SOURCES)

__getattr__ = lazy_exports.loader(__name__, _SOURCES, globals())
