"""Hyper-parameters that a plugin declares beside its factory.

An algorithm, partitioner, SSL or adaptation method that has
hyper-parameters of its own declares them as a frozen dataclass and
registers it with its factory:

    @dataclasses.dataclass(frozen=True)
    class FedProxParams:
      prox_mu: float = dataclasses.field(
          default=0.01, metadata={"help": "Proximal term weight."})

      def validate(self) -> None:  # optional; raises UserError
        if self.prox_mu < 0:
          raise UserError(f"prox_mu must be >= 0, got {self.prox_mu}")

    @ALGORITHMS.register("fedprox", params=FedProxParams)
    def fedprox(config: AlgorithmConfig, params: FedProxParams): ...

Every field has a default and one of the types int, float, bool, str,
`typing.Literal["a", "b", ...]` of strings (a choice) or `Tuple[int, ...]`
(a comma-separated list flag, `--dann_hidden=500,500`). The binaries turn
each field into a flag of the same name (`--prox_mu`; see
`fedclf.cli.define_params_flags`), so adding a hyper-parameter is one field
in one file. Library callers build the dataclass directly, or from a
mapping with `build_params`, which type-checks and validates.

An SSL method's params may also define `federated_refusal(self) ->
Optional[str]`: a one-line reason why that setting cannot pretrain
federated (BYOL's cosine momentum schedule needs the training's total
steps), or None; `simulations.federated` refuses with it before starting.

Two plugins may declare the same field name (they then share one flag)
only when its type, choices and default agree; otherwise `flag_specs`
fails naming both.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from fedclf.errors import UserError

# The flag kinds a field can become.
INT, FLOAT, BOOL, STR, ENUM = "int", "float", "bool", "str", "enum"
INT_TUPLE = "int_tuple"  # Tuple[int, ...]: a comma-separated list flag
_KIND_OF_TYPE = {int: INT, float: FLOAT, bool: BOOL, str: STR}


class ParamsDeclarationError(UserError):
  """A plugin's params class is malformed, or clashes with another's."""


@dataclasses.dataclass(frozen=True)
class NoParams:
  """The hyper-parameters of a plugin that declares none."""


@dataclasses.dataclass(frozen=True)
class ParamField:
  """One declared hyper-parameter, as a flag sees it."""
  name: str
  kind: str  # INT, FLOAT, BOOL, STR, ENUM or INT_TUPLE
  default: Any
  help: str
  choices: Tuple[str, ...] = ()  # ENUM only

  def same_flag_as(self, other: "ParamField") -> bool:
    return (self.kind, self.default, self.choices) == (other.kind,
                                                       other.default,
                                                       other.choices)

  def type_text(self) -> str:
    if self.kind == ENUM:
      return f"one of {'/'.join(self.choices)}"
    if self.kind == INT_TUPLE:
      return "a tuple of int"
    return self.kind

  def describe(self) -> str:
    return f"{self.type_text()}, default {self.default!r}"


def _kind_of(annotation: Any) -> Tuple[Optional[str], Tuple[str, ...]]:
  if annotation in _KIND_OF_TYPE:
    return _KIND_OF_TYPE[annotation], ()
  if typing.get_origin(annotation) is typing.Literal:
    choices = typing.get_args(annotation)
    if choices and all(isinstance(c, str) for c in choices):
      return ENUM, tuple(choices)
  if (typing.get_origin(annotation) is tuple and
      typing.get_args(annotation) == (int, Ellipsis)):
    return INT_TUPLE, ()
  return None, ()


def param_fields(params_class: type) -> Tuple[ParamField, ...]:
  """The declared fields of `params_class`; raises ParamsDeclarationError
  unless it is a frozen dataclass whose fields all have a default and a
  supported type (checked when the plugin registers, so a malformed class
  fails at import rather than when its flag is first used)."""
  name = getattr(params_class, "__qualname__", repr(params_class))
  if not (dataclasses.is_dataclass(params_class) and
          isinstance(params_class, type)):
    raise ParamsDeclarationError(f"params {name} must be a dataclass")
  if not params_class.__dataclass_params__.frozen:
    raise ParamsDeclarationError(
        f"params {name} must be frozen (@dataclasses.dataclass(frozen=True))"
        f": configs are recorded and compared, never mutated")
  try:
    hints = typing.get_type_hints(params_class, include_extras=False)
  except Exception as e:  # pylint: disable=broad-except
    raise ParamsDeclarationError(
        f"params {name}: cannot resolve the field types: {e}") from None
  out = []
  for field in dataclasses.fields(params_class):
    kind, choices = _kind_of(hints.get(field.name))
    if kind is None:
      raise ParamsDeclarationError(
          f"params {name}.{field.name}: type {hints.get(field.name)!r} is "
          f"not int, float, bool, str, Literal[str, ...] or Tuple[int, ...]")
    if field.default is dataclasses.MISSING:
      raise ParamsDeclarationError(
          f"params {name}.{field.name} needs a default (it becomes the "
          f"flag's default)")
    out.append(ParamField(field.name, kind, field.default,
                          str(field.metadata.get("help", "")), choices))
    try:
      _check_value(out[-1], field.default, f"params {name} default")
    except UserError as e:
      raise ParamsDeclarationError(str(e)) from None
  return tuple(out)


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_value(field: ParamField, value: Any, owner: str) -> Any:
  """`value` as the field's type; UserError when it is not one."""
  ok = {
      INT: _is_int(value),
      FLOAT: isinstance(value, numbers.Real) and not isinstance(value, bool),
      BOOL: isinstance(value, bool),
      STR: isinstance(value, str),
      ENUM: isinstance(value, str) and value in field.choices,
      # A list too: what JSON and YAML give back for a recorded tuple.
      INT_TUPLE: isinstance(value, (tuple, list)) and
                 all(_is_int(v) for v in value),
  }[field.kind]
  if not ok:
    raise UserError(f"{owner}: {field.name} must be {field.type_text()}, "
                    f"got {value!r}")
  if field.kind == INT:
    return int(value)
  if field.kind == FLOAT:
    return float(value)
  if field.kind == INT_TUPLE:
    return tuple(int(v) for v in value)
  return value


def parse_int_tuple(name: str, texts: Iterable[str]) -> Tuple[int, ...]:
  """The ints of a list flag's strings (`--dann_hidden=500,500`); a
  UserError naming the flag when one is not an integer."""
  texts = list(texts)
  try:
    return tuple(int(text) for text in texts)
  except ValueError:
    raise UserError(f"--{name}: expected integers, got "
                    f"{','.join(texts)}") from None


def validate_params(params: Any, owner: str) -> None:
  """Refuses NaN/infinite floats (they slip through every range check) and
  a choice field (`Literal[...]`) holding a value outside its choices (a
  params object built in code skips `build_params`' type check), then runs
  the class's own `validate()` if it has one."""
  for field in param_fields(type(params)):
    value = getattr(params, field.name)
    if isinstance(value, float) and not math.isfinite(value):
      raise UserError(f"{owner}: {field.name} must be a finite number, got "
                      f"{value}")
    if field.kind == ENUM:
      _check_value(field, value, owner)
  validate = getattr(params, "validate", None)
  if validate is not None:
    validate()


def build_params(params_class: type, values: Mapping[str, Any],
                 owner: str) -> Any:
  """A validated `params_class` from `values` (defaults for the fields
  missing there); unknown names and wrongly typed values are UserErrors.

  Args:
    params_class: A registered params dataclass.
    values: Field name -> value.
    owner: Who the params belong to, for messages ("algorithm fedprox").
  """
  fields = {f.name: f for f in param_fields(params_class)}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise UserError(f"{owner} has no hyper-parameter "
                    f"{', '.join(unknown)}; it has: "
                    f"{', '.join(fields) or '(none)'}")
  checked = {name: _check_value(fields[name], value, owner)
             for name, value in values.items()}
  params = params_class(**checked)
  validate_params(params, owner)
  return params


class _Registry(typing.Protocol):
  """The part of `fedclf.registry.Registry` used here."""
  kind: str

  def names(self) -> typing.List[str]:
    ...

  def params_class(self, name: str) -> Optional[type]:
    ...


def params_class_of(registry: _Registry, name: str) -> type:
  """The params class registered for `name` (NoParams when none)."""
  return registry.params_class(name) or NoParams


def resolve_params(registry: _Registry, name: str, params: Any) -> Any:
  """`params` checked against what `registry`'s plugin `name` declares and
  validated; None means the plugin's defaults."""
  params_class = params_class_of(registry, name)
  owner = f"{registry.kind} {name}"
  if params is None:
    params = params_class()
  elif type(params) is not params_class:  # pylint: disable=unidiomatic-typecheck
    raise UserError(f"{owner} takes {params_class.__qualname__}, got "
                    f"{type(params).__qualname__}")
  validate_params(params, owner)
  return params


@dataclasses.dataclass(frozen=True)
class FlagSpec:
  """One flag shared by every plugin that declares a field of its name."""
  field: ParamField
  owners: Tuple[Tuple[str, str], ...]  # (registry kind, plugin name)

  def help(self) -> str:
    """'fedprox: Proximal term weight.' (the first declarer's help text)."""
    names = ", ".join(name for _, name in self.owners)
    return f"{names}: {self.field.help}".rstrip()

  def describe_owners(self) -> str:
    return ", ".join(f"{kind} {name}" for kind, name in self.owners)


def flag_specs(registries: Iterable[_Registry]) -> Dict[str, FlagSpec]:
  """Field name -> FlagSpec over every registered plugin of `registries`.

  Raises:
    ParamsDeclarationError: two plugins declare one name with a different
      type, choices or default (one flag could not serve both).
  """
  return flag_specs_of(registered_fields(registries))


def registered_fields(
    registries: Iterable[_Registry]) -> List[PluginFields]:
  """The declared fields of every plugin with params in `registries`, in
  registry order, then by name."""
  out = []
  for registry in registries:
    for name in registry.names():
      params_class = registry.params_class(name)
      if params_class is not None:
        out.append(PluginFields(registry.kind, name,
                                param_fields(params_class)))
  return out


@dataclasses.dataclass(frozen=True)
class PluginFields:
  """The hyper-parameters of one plugin, from its live params class or
  from fedclf's plugin manifest (`fedclf.plugin_manifest`)."""
  kind: str  # the registry's kind, "algorithm"
  name: str
  fields: Tuple[ParamField, ...]


def flag_specs_of(plugins: Iterable[PluginFields]) -> Dict[str, FlagSpec]:
  """`flag_specs` over plugins' fields however they were found (in the
  order given, which orders each flag's owners)."""
  specs: Dict[str, FlagSpec] = {}
  for plugin in plugins:
    owner = (plugin.kind, plugin.name)
    for field in plugin.fields:
      seen = specs.get(field.name)
      if seen is None:
        specs[field.name] = FlagSpec(field, (owner,))
      elif seen.field.same_flag_as(field):
        if owner not in seen.owners:
          specs[field.name] = dataclasses.replace(
              seen, owners=seen.owners + (owner,))
      else:
        raise ParamsDeclarationError(
            f"hyper-parameter {field.name!r} is declared by "
            f"{seen.describe_owners()} ({seen.field.describe()}) and by "
            f"{owner[0]} {owner[1]} ({field.describe()}); one flag cannot "
            f"serve both: rename one of them")
  return specs
