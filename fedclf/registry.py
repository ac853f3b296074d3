"""One registry mechanism for every kind of plugin in fedclf.

Datasets, partitioners, models, federated algorithms, federated backends,
aggregators, SSL methods and adaptation methods all register the same way:

    from fedclf.registry import MODELS

    @MODELS.register("my_net")
    def build_my_net(input_shape, num_classes): ...

An entry with hyper-parameters of its own registers their dataclass with it
(`ALGORITHMS.register("fedprox", params=FedProxParams)`, see
`fedclf.plugin_config`); the binaries make one flag per field.

`Registry.register` refuses a duplicate name (a silently replaced entry is a
bug that shows up as wrong numbers much later); `Registry.get` raises
`UnknownNameError` whose message lists the valid names, so binaries can turn
it into a one-line usage error.

Loading plugins (fedclf's own packages, the `fedclf.plugins` entry-point
group, `--plugin=some.module`) lives in `fedclf.plugins`. This module
imports nothing from fedclf, so that every plugin can import it without an
import cycle.
"""

from __future__ import annotations

from typing import Callable, Dict, Generic, List, Optional, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
  """A user-facing registry problem (bad name, clash, broken plugin)."""


class UnknownNameError(RegistryError):
  pass


class DuplicateNameError(RegistryError):
  pass


class PluginImportError(RegistryError):
  pass


class Registry(Generic[T]):
  """A named table of constructors of one kind."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, T] = {}
    self._params: Dict[str, type] = {}

  def register(self, name: str,
               params: Optional[type] = None) -> Callable[[T], T]:
    """Decorator form of `add`."""
    def decorator(obj: T) -> T:
      self.add(name, obj, params)
      return obj

    return decorator

  def add(self, name: str, obj: T, params: Optional[type] = None) -> None:
    """Registers `obj` as `name`, with its hyper-parameters' dataclass
    `params` (None: it has none)."""
    if not name or name != name.strip():
      raise RegistryError(f"invalid {self.kind} name {name!r}")
    if name in self._entries:
      existing = self._entries[name]
      raise DuplicateNameError(
          f"{self.kind} {name!r} is already registered by "
          f"{getattr(existing, '__module__', '?')}."
          f"{getattr(existing, '__qualname__', existing)}; "
          f"{getattr(obj, '__module__', '?')} cannot register it again")
    if params is not None:
      # Deferred: this module imports nothing from fedclf when it loads
      # (every plugin imports it); plugin_config needs only fedclf.errors.
      from fedclf import plugin_config  # pylint: disable=g-import-not-at-top
      try:
        plugin_config.param_fields(params)
      except plugin_config.ParamsDeclarationError as e:
        raise RegistryError(f"{self.kind} {name!r}: {e}") from None
      self._params[name] = params
    self._entries[name] = obj

  def get(self, name: str) -> T:
    try:
      return self._entries[name]
    except KeyError:
      raise UnknownNameError(
          f"unknown {self.kind} {name!r}; choose one of: "
          f"{', '.join(self.names())}") from None

  def params_class(self, name: str) -> Optional[type]:
    """The hyper-parameters' dataclass of `name` (None: it has none)."""
    self.get(name)  # An unknown name lists the known ones.
    return self._params.get(name)

  def names(self) -> List[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def __len__(self) -> int:
    return len(self._entries)


DATASETS: Registry = Registry("dataset")
PARTITIONERS: Registry = Registry("partitioner")
MODELS: Registry = Registry("model")
ALGORITHMS: Registry = Registry("algorithm")
SSL_METHODS: Registry = Registry("ssl method")
ADAPTATION_METHODS: Registry = Registry("adaptation method")
# Federated backends: factories from a `BackendSpec` to a `Backend` (see
# fedclf/federated/backends/, which registers the built-in ones).
BACKENDS: Registry = Registry("backend")
# How client updates are combined, usable with any algorithm
# (`--aggregator`): factories from their params dataclass to an `Aggregator`
# (see fedclf/federated/aggregation/, which registers the built-in ones).
AGGREGATORS: Registry = Registry("aggregator")

ALL_REGISTRIES = (DATASETS, PARTITIONERS, MODELS, ALGORITHMS, SSL_METHODS,
                  ADAPTATION_METHODS, BACKENDS, AGGREGATORS)
