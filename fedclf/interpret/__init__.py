"""Interpretation: saliency, SmoothGrad, integrated gradients (with the
completeness check), Grad-CAM, the model-parameter randomization test,
model comparison and model pictures.

    python -m fedclf.interpret --run_dir=results/baselines/mnist_cnn \
        --compare_run_dir=results/mcmahan/fedavg_iid_e5_b10_lr0.1 \
        --out_dir=results/interpret
"""

from fedclf.interpret.attribution import conv_layer_names
from fedclf.interpret.attribution import grad_cam
from fedclf.interpret.attribution import heatmap
from fedclf.interpret.attribution import integrated_gradients
from fedclf.interpret.attribution import IntegratedGradients
from fedclf.interpret.attribution import last_conv_layer_name
from fedclf.interpret.attribution import smoothgrad
from fedclf.interpret.attribution import tapped_forward
from fedclf.interpret.attribution import vanilla_gradients
from fedclf.interpret.report import InterpretConfig
from fedclf.interpret.report import METHODS
from fedclf.interpret.report import run_interpret
from fedclf.interpret.sanity import cascading_randomization
from fedclf.interpret.sanity import RandomizationResult
from fedclf.interpret.similarity import map_similarity
