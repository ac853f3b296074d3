"""Loading plugins: fedclf's own packages, entry points and `--plugin`.

Kept apart from `fedclf.registry`, which imports nothing from fedclf: every
plugin module (built-in or third-party) imports the registry to register
itself, so the registry importing the plugins would close an import cycle
through all of fedclf. This module sits above both instead:

    fedclf.registry  <-  fedclf.models, fedclf.data, ...  <-  fedclf.plugins

Third-party plugins are loaded from the `fedclf.plugins` entry-point group
or from `--plugin=some.module` on any binary (see `load_plugins`).
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Iterable, List, Sequence, Set, Tuple

from fedclf.registry import ALL_REGISTRIES
from fedclf.registry import DuplicateNameError
from fedclf.registry import PluginImportError

ENTRY_POINT_GROUP = "fedclf.plugins"

_loaded_plugins: Set[str] = set()
_builtins_loaded = False


def builtins_loaded() -> bool:
  """Whether `load_builtins` ran: until then the registries hold only what
  was registered by hand (binaries know the built-in plugins from
  `fedclf.plugin_manifest` instead)."""
  return _builtins_loaded


def load_builtins() -> None:
  """Imports fedclf's own modules so their decorators run."""
  global _builtins_loaded
  # Imported here, not at the top: importing this module (as fedclf.cli
  # does) must not pull in TensorFlow and every package before flags parse.
  # pylint: disable=g-import-not-at-top,unused-import
  import fedclf.adapt  # noqa: F401
  import fedclf.data  # noqa: F401
  import fedclf.federated  # noqa: F401
  import fedclf.models  # noqa: F401
  import fedclf.partition  # noqa: F401
  import fedclf.ssl  # noqa: F401
  # pylint: enable=g-import-not-at-top,unused-import
  _builtins_loaded = True


def entry_point_targets() -> List[Tuple[str, str]]:
  """(plugin name, module) of every entry point of the `fedclf.plugins`
  group installed."""
  return [(ep.name, ep.value.split(":")[0])
          for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]


def load_plugins(modules: Iterable[str] = (),
                 use_entry_points: bool = True) -> List[str]:
  """Imports third-party plugin modules; returns the names loaded.

  The built-in plugins are loaded first, so a plugin that reuses a built-in
  name fails with `DuplicateNameError` instead of shadowing it.

  Args:
    modules: module names to import (e.g. from `--plugin`); empty ones are
      skipped.
    use_entry_points: also import every entry point of the
      `fedclf.plugins` group.

  Returns:
    The names of the plugins imported by this call (a module already loaded
    by an earlier call is skipped).

  Raises:
    PluginImportError: a plugin failed to import; names the plugin.
    DuplicateNameError: a plugin registered a name that is taken; names the
      plugin.
  """
  load_builtins()
  targets = entry_point_targets() if use_entry_points else []
  targets.extend((m, m) for m in modules if m)
  loaded = []
  for plugin_name, module_name in targets:
    if module_name in _loaded_plugins:
      continue
    try:
      importlib.import_module(module_name)
    except DuplicateNameError as e:
      raise DuplicateNameError(f"plugin {plugin_name!r}: {e}") from None
    except Exception as e:  # pylint: disable=broad-except
      raise PluginImportError(
          f"plugin {plugin_name!r} (module {module_name}) failed to import: "
          f"{type(e).__name__}: {e}") from None
    _loaded_plugins.add(module_name)
    loaded.append(plugin_name)
  return loaded


def describe_all() -> str:
  """Every registered name per kind, for `--list`."""
  return describe_names([(registry.kind, registry.names())
                         for registry in ALL_REGISTRIES])


def describe_names(names: Sequence[Tuple[str, Sequence[str]]]) -> str:
  """`--list`'s text: one line per (kind, names)."""
  return "\n".join(f"{kind}s: {', '.join(kind_names) or '(none)'}"
                   for kind, kind_names in names)
