"""fedclf: federated and self-supervised image-classification simulation on TensorFlow."""

__version__ = "0.1.0"
