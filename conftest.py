"""Test-wide settings: quiet TensorFlow and make the repository importable."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never download; the real files come from FEDCLF_DATA_DIR.
_DEFAULT_DATA = os.path.join(os.path.dirname(__file__), "..", "shared", "data")
if "FEDCLF_DATA_DIR" not in os.environ and os.path.isdir(_DEFAULT_DATA):
  os.environ["FEDCLF_DATA_DIR"] = os.path.abspath(_DEFAULT_DATA)
