"""Test-wide settings: quiet TensorFlow and make the repository importable."""

import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never download; the real files come from FEDCLF_DATA_DIR.
_DEFAULT_DATA = os.path.join(os.path.dirname(__file__), "..", "shared", "data")
if "FEDCLF_DATA_DIR" not in os.environ and os.path.isdir(_DEFAULT_DATA):
  os.environ["FEDCLF_DATA_DIR"] = os.path.abspath(_DEFAULT_DATA)

# fedclf's process-wide defaults (oneDNN on, gRPC fork handlers off:
# fedclf/__init__.py) must be set before the first test module imports
# TensorFlow, which reads them once, when it loads.
import fedclf  # noqa: E402,F401  pylint: disable=unused-import,g-bad-import-order

# Several tests press Ctrl-C on a child process. A suite started in the
# background (`nohup`, `&` in a script) inherits SIGINT as ignored, and
# every child would inherit that too and never see the signal; a handler
# here is reset to the default in each child instead.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)
