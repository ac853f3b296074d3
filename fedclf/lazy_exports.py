"""Package attributes loaded on first use (PEP 562).

`python -m fedclf.export` (or `fedclf.interpret`) runs the package's
`__init__` before its `__main__`, and that binary's `--help` must answer
without importing TensorFlow; so the package names what it re-exports and
from where, and imports each module only when one of its names is used.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, MutableMapping


def loader(package: str, sources: Dict[str, str],
           namespace: MutableMapping[str, Any]) -> Callable[[str], Any]:
  """The package's module-level `__getattr__`: `sources` maps each exported
  name to the module that defines it; a name is looked up once, then kept
  in the package's `namespace` (its `globals()`)."""

  def getattr_(name: str) -> Any:
    if name not in sources:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(sources[name]), name)
    namespace[name] = value
    return value

  return getattr_
