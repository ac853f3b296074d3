"""fedclf's built-in plugins, written down so that nothing is imported to
know them.

Importing the built-in plugins imports TensorFlow (seconds, and its start-up
lines on stderr). A binary needs only their names (`--list`) and their
hyper-parameters (one flag each, see `fedclf.plugin_config`) to parse its
command line and to answer `--help`, `--helpfull` and `--list`; those come
from `plugin_manifest.json` beside this file: per registry kind, every
built-in plugin's name, the module that registers it, the first line of its
docstring and its params fields (type, default, help, choices).
`fedclf.cli` reads it; the plugins themselves load when a run starts. It
also holds the choices of flags that other TensorFlow-importing modules
define (`flag_choices`: the optimizer and schedule names).

The file is generated from the live registries, never edited by hand:

    python -m fedclf.plugin_manifest --write    # after changing a plugin
    python -m fedclf.plugin_manifest --check    # exit 1 when out of date

tests/cli/fast_start_test.py runs the check, and a run whose chosen plugin
declares other hyper-parameters than the file says stops with a one-line
error naming the command (`stale_message`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from fedclf import registry as registry_lib
from fedclf.plugin_config import param_fields
from fedclf.plugin_config import ParamField
from fedclf.plugin_config import PluginFields

MANIFEST_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             "plugin_manifest.json")
REFRESH_COMMAND = "python -m fedclf.plugin_manifest --write"
_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class PluginEntry:
  """One built-in plugin as the manifest records it."""
  kind: str  # its registry's kind, "algorithm"
  name: str
  module: str  # the module whose import registers it
  description: str  # the first line of its docstring ("" when none)
  fields: Tuple[ParamField, ...]  # its params fields (none: no params)

  def plugin_fields(self) -> PluginFields:
    return PluginFields(self.kind, self.name, self.fields)


def _description(obj: Any) -> str:
  if isinstance(obj, functools.partial):
    obj = obj.func
  if not (inspect.isfunction(obj) or inspect.isclass(obj) or
          inspect.ismethod(obj)):
    return ""
  lines = (inspect.getdoc(obj) or "").strip().splitlines()
  return lines[0] if lines else ""


def live_entries(
    registries: Iterable[registry_lib.Registry]) -> List[PluginEntry]:
  """Every plugin registered now in `registries` (registry order, then by
  name)."""
  out = []
  for reg in registries:
    for name in reg.names():
      obj = reg.get(name)
      params = reg.params_class(name)
      module = (getattr(obj, "__module__", None) or
                getattr(getattr(obj, "func", None), "__module__", None) or
                type(obj).__module__)
      out.append(PluginEntry(reg.kind, name, module, _description(obj),
                             param_fields(params) if params else ()))
  return out


def _field_json(field: ParamField) -> Dict[str, Any]:
  record = {"name": field.name, "type": field.kind,
            "default": (list(field.default) if isinstance(field.default, tuple)
                        else field.default),
            "help": field.help}
  if field.choices:
    record["choices"] = list(field.choices)
  return record


def _field_of(record: Dict[str, Any]) -> ParamField:
  default = record["default"]
  return ParamField(record["name"], record["type"],
                    tuple(default) if isinstance(default, list) else default,
                    record["help"], tuple(record.get("choices", ())))


def to_json(entries: Sequence[PluginEntry],
            choices: Dict[str, Sequence[str]]) -> str:
  """The manifest file's text for `entries` and flag `choices`."""
  kinds: Dict[str, Dict[str, Any]] = {}
  for entry in entries:
    kinds.setdefault(entry.kind, {})[entry.name] = {
        "module": entry.module, "description": entry.description,
        "params": [_field_json(f) for f in entry.fields]}
  return json.dumps({"format": _FORMAT,
                     "generated_by": REFRESH_COMMAND,
                     "flag_choices": {k: list(v) for k, v in choices.items()},
                     "kinds": kinds}, indent=1) + "\n"


def from_json(text: str) -> Tuple[PluginEntry, ...]:
  return _entries(json.loads(text))


def _entries(manifest: Dict[str, Any]) -> Tuple[PluginEntry, ...]:
  kinds = manifest["kinds"]
  return tuple(
      PluginEntry(kind, name, record["module"], record["description"],
                  tuple(_field_of(f) for f in record["params"]))
      for kind, names in kinds.items() for name, record in names.items())


@functools.lru_cache(maxsize=None)
def _read() -> Dict[str, Any]:
  with open(MANIFEST_PATH, encoding="utf-8") as f:
    return json.load(f)


@functools.lru_cache(maxsize=None)
def load() -> Tuple[PluginEntry, ...]:
  """The built-in plugins, from the manifest file (read once)."""
  return _entries(_read())


def flag_choices() -> Dict[str, List[str]]:
  """"optimizers", "schedules": fedclf.train.optimizers' names."""
  return _read()["flag_choices"]


def live_flag_choices() -> Dict[str, Sequence[str]]:
  """What `flag_choices` records, from the modules (imports TensorFlow)."""
  from fedclf.train import optimizers  # pylint: disable=g-import-not-at-top
  return {"optimizers": optimizers.OPTIMIZERS,
          "schedules": optimizers.SCHEDULES}


def entries_of_kind(kind: str) -> List[PluginEntry]:
  return [entry for entry in load() if entry.kind == kind]


def find(kind: str, name: str) -> Optional[PluginEntry]:
  for entry in load():
    if (entry.kind, entry.name) == (kind, name):
      return entry
  return None


def stale_message(kind: str, name: str,
                  fields: Tuple[ParamField, ...]) -> Optional[str]:
  """Why the manifest is out of date for built-in plugin `name` of `kind`,
  whose live params fields are `fields` (None: it agrees, or the plugin is
  not a built-in one)."""
  entry = find(kind, name)
  if entry is None or entry.fields == fields:
    return None
  return (f"{os.path.relpath(MANIFEST_PATH)} is out of date: {kind} {name} "
          f"declares {', '.join(f.name for f in fields) or 'no'} "
          f"hyper-parameters, the manifest says "
          f"{', '.join(f.name for f in entry.fields) or 'none'}; run "
          f"{REFRESH_COMMAND}")


def generate() -> str:
  """The manifest's text from the live registries: imports every built-in
  plugin (TensorFlow too). Call it in a process that has registered nothing
  else."""
  from fedclf import plugins  # pylint: disable=g-import-not-at-top
  plugins.load_builtins()
  return to_json(live_entries(registry_lib.ALL_REGISTRIES),
                 live_flag_choices())


def main(argv: Sequence[str]) -> int:
  """--write: regenerate the file; --check: exit 1 unless it is current."""
  if list(argv[1:]) not in (["--write"], ["--check"]):
    print("usage: python -m fedclf.plugin_manifest --write|--check",
          file=sys.stderr)
    return 2
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # As binaries do.
  text = generate()
  current = ""
  if os.path.exists(MANIFEST_PATH):
    with open(MANIFEST_PATH, encoding="utf-8") as f:
      current = f.read()
  if argv[1] == "--check":
    if text != current:
      print(f"{MANIFEST_PATH} is out of date with the built-in plugins: run "
            f"{REFRESH_COMMAND}", file=sys.stderr)
      return 1
    return 0
  if text != current:
    from fedclf.results.record import atomic_write_text  # pylint: disable=g-import-not-at-top
    atomic_write_text(MANIFEST_PATH, text)
  print(f"{MANIFEST_PATH}: {len(from_json(text))} built-in plugins")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
