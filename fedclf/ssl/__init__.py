"""Self-supervised pretraining: augmentations, losses, methods, the
pretraining loop, representation evaluation and the centralized run.

Methods (SimCLR, SimSiam, Barlow Twins, BYOL, VICReg) register in
`fedclf.registry.SSL_METHODS` when this package is imported; add one with

    from fedclf.registry import SSL_METHODS
    from fedclf.ssl import SslConfig, SslMethod

    @SSL_METHODS.register("my_method", params=MyParams)  # params optional
    def build_my_method(config: SslConfig, feature_dim: int) -> SslMethod: ...

where `MyParams` is a frozen dataclass of the method's own hyper-parameters
(see `fedclf.plugin_config`), read from `config.params`.

(This package is `fedclf.ssl`, never a top-level `ssl`, which would shadow
Python's standard library module; see BUILD_NOTES.md.)
"""

from fedclf.ssl import methods  # noqa: F401  (registers the methods)
from fedclf.ssl.augment import augment_batch
from fedclf.ssl.augment import default_for
from fedclf.ssl.augment import SslAugmentConfig
from fedclf.ssl.augment import two_views
from fedclf.ssl.method import build_method
from fedclf.ssl.method import encode_views
from fedclf.ssl.method import normalize_images
from fedclf.ssl.method import ssl_step_loss
from fedclf.ssl.method import SslConfig
from fedclf.ssl.method import SslMethod
from fedclf.ssl.evaluate import knn_accuracy
from fedclf.ssl.evaluate import FinetuneRecipe
from fedclf.ssl.evaluate import label_efficiency
from fedclf.ssl.evaluate import linear_probe
from fedclf.ssl.evaluate import plot_embeddings
from fedclf.ssl.losses import barlow_twins_loss
from fedclf.ssl.losses import byol_loss
from fedclf.ssl.losses import nt_xent
from fedclf.ssl.losses import simsiam_loss
from fedclf.ssl.losses import vicreg_loss
from fedclf.ssl.methods.barlow_twins import BarlowTwinsParams
from fedclf.ssl.methods.byol import ByolParams
from fedclf.ssl.methods.simclr import SimClrParams
from fedclf.ssl.methods.simsiam import SimSiamParams
from fedclf.ssl.methods.vicreg import VicRegParams
from fedclf.ssl.pretrain import PretrainConfig
from fedclf.ssl.pretrain import pretrain_encoder
from fedclf.ssl.pretrain import PretrainResult
from fedclf.ssl.pretraining_run import run_ssl_pretraining
from fedclf.ssl.pretraining_run import SslRunConfig
