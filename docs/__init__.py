"""Project documentation that runs: `python -m docs.guide.build`."""

# Before any TensorFlow import: fedclf sets its process-wide defaults
# (oneDNN on, gRPC fork handlers off: fedclf/__init__.py) at import, and
# TensorFlow reads them once, when it loads.
import fedclf  # noqa: F401  pylint: disable=unused-import
