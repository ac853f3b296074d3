"""Plugins' own hyper-parameters: declaration checks, typed construction,
shared and clashing flag names, and the flags a binary generates."""

import dataclasses
from typing import Literal, Tuple

from absl import flags
import pytest

from fedclf import cli
from fedclf import plugin_config
from fedclf import registry
from fedclf.errors import UserError


@dataclasses.dataclass(frozen=True)
class WidgetParams:
  size: int = dataclasses.field(default=3, metadata={"help": "Widget size."})
  scale: float = 0.5
  shiny: bool = False
  label: str = "w"
  shape: Literal["round", "square"] = "round"

  def validate(self) -> None:
    if self.size < 1:
      raise UserError(f"size must be >= 1, got {self.size}")


@dataclasses.dataclass(frozen=True)
class GadgetParams:
  size: int = 3  # Same as WidgetParams.size: one shared flag.
  speed: float = 2.0


@dataclasses.dataclass(frozen=True)
class LayersParams:
  hidden: Tuple[int, ...] = dataclasses.field(
      default=(500, 500), metadata={"help": "Hidden widths."})


@dataclasses.dataclass(frozen=True)
class ClashingParams:
  size: float = 3.0  # Same name as WidgetParams.size, another type.


def _registry(kind="widget"):
  reg = registry.Registry(kind)
  reg.add("plain", lambda: None)
  reg.add("fancy", lambda: None, params=WidgetParams)
  return reg


def test_fields_describe_the_flags():
  fields = {f.name: f for f in plugin_config.param_fields(WidgetParams)}
  assert fields["size"] == plugin_config.ParamField(
      "size", plugin_config.INT, 3, "Widget size.")
  assert fields["shape"].kind == plugin_config.ENUM
  assert fields["shape"].choices == ("round", "square")
  assert [f.kind for f in fields.values()] == ["int", "float", "bool", "str",
                                               "enum"]


def test_registry_keeps_the_params_class():
  reg = _registry()
  assert reg.params_class("fancy") is WidgetParams
  assert reg.params_class("plain") is None
  assert plugin_config.params_class_of(reg, "plain") is plugin_config.NoParams
  with pytest.raises(registry.UnknownNameError, match="choose one of"):
    reg.params_class("nope")


@pytest.mark.parametrize("source,message", [
    ("@dataclasses.dataclass\nclass P:\n  x: int = 1\n", "must be frozen"),
    ("@dataclasses.dataclass(frozen=True)\nclass P:\n  x: int\n",
     "needs a default"),
    ("@dataclasses.dataclass(frozen=True)\nclass P:\n  x: list = ()\n",
     "not int, float, bool, str"),
    ("@dataclasses.dataclass(frozen=True)\nclass P:\n  x: int = 'a'\n",
     "x must be int"),
    ("class P:\n  x: int = 1\n", "must be a dataclass"),
])
def test_malformed_params_fail_at_registration(source, message):
  namespace = {"dataclasses": dataclasses}
  exec(source, namespace)  # pylint: disable=exec-used
  reg = registry.Registry("widget")
  with pytest.raises(registry.RegistryError, match=f"widget 'bad'.*{message}"):
    reg.add("bad", lambda: None, params=namespace["P"])
  assert "bad" not in reg


def test_build_params_checks_types_and_validates():
  params = plugin_config.build_params(
      WidgetParams, {"size": 5, "scale": 1, "shape": "square"}, "widget w")
  assert params == WidgetParams(size=5, scale=1.0, shape="square")
  assert isinstance(params.scale, float)
  for values, message in [
      ({"size": "5"}, "widget w: size must be int, got '5'"),
      ({"size": True}, "size must be int"),
      ({"shiny": 1}, "shiny must be bool"),
      ({"shape": "oval"}, "shape must be one of round/square"),
      ({"colour": "red"}, "widget w has no hyper-parameter colour"),
      ({"size": 0}, "size must be >= 1"),
      ({"scale": float("nan")}, "scale must be a finite number"),
  ]:
    with pytest.raises(UserError, match=message):
      plugin_config.build_params(WidgetParams, values, "widget w")


def test_resolve_params_fills_defaults_and_refuses_another_class():
  reg = _registry()
  assert plugin_config.resolve_params(reg, "fancy", None) == WidgetParams()
  assert plugin_config.resolve_params(reg, "plain", None) == (
      plugin_config.NoParams())
  with pytest.raises(UserError, match="widget plain takes NoParams, got "
                     "WidgetParams"):
    plugin_config.resolve_params(reg, "plain", WidgetParams())
  with pytest.raises(UserError, match="size must be >= 1"):
    plugin_config.resolve_params(reg, "fancy", WidgetParams(size=0))
  # A choice built in code (no build_params) is still checked.
  with pytest.raises(UserError, match="widget fancy: shape must be one of "
                     "round/square, got 'oval'"):
    plugin_config.resolve_params(reg, "fancy", WidgetParams(shape="oval"))


def test_same_field_shares_a_flag_only_when_it_agrees():
  widgets = _registry()
  gadgets = registry.Registry("gadget")
  gadgets.add("g", lambda: None, params=GadgetParams)
  specs = plugin_config.flag_specs([widgets, gadgets])
  assert specs["size"].owners == (("widget", "fancy"), ("gadget", "g"))
  assert specs["size"].help() == "fancy, g: Widget size."
  assert set(specs) == {"size", "scale", "shiny", "label", "shape", "speed"}
  gadgets.add("clash", lambda: None, params=ClashingParams)
  with pytest.raises(plugin_config.ParamsDeclarationError,
                     match=r"'size' is declared by widget fancy \(int, "
                     r"default 3\) and by gadget clash \(float, default "
                     r"3.0\); one flag cannot serve both"):
    plugin_config.flag_specs([widgets, gadgets])


def test_plugins_named_in_argv_and_flagfiles(tmp_path):
  flagfile = tmp_path / "run.cfg"
  flagfile.write_text("--plugin=from_file\n--rounds=3\n")
  argv = ["prog", "--plugin=a", "--plugin", "b", f"--flagfile={flagfile}",
          "--other=1", "--", "--plugin=after_dashes"]
  assert cli.plugins_named_in(argv) == ["a", "b", "from_file"]


@pytest.fixture
def binary_flags(monkeypatch):
  """A private absl flag set standing in for a binary's FLAGS."""
  values = flags.FlagValues()
  flags.DEFINE_integer("rounds", 5, "A binary's own flag.",
                       flag_values=values)
  monkeypatch.setattr(flags, "FLAGS", values)
  return values


def test_binary_flags_from_params(binary_flags, caplog):
  widgets = _registry()
  cli.define_params_flags(widgets)
  cli.define_params_flags(widgets)  # Again: nothing new, no clash.
  assert binary_flags["size"].help == "fancy: Widget size."
  binary_flags(["prog", "--size=7", "--shape=square", "--shiny"])
  assert cli.params_from_flags(widgets, "fancy") == WidgetParams(
      size=7, shiny=True, shape="square")
  # Another plugin's flags are ignored with a warning.
  assert cli.params_from_flags(widgets, "plain") == plugin_config.NoParams()
  assert "--size is set, but widget plain does not read it" in caplog.text
  binary_flags.unparse_flags()
  binary_flags(["prog", "--size=0"])
  with pytest.raises(UserError, match="size must be >= 1"):
    cli.params_from_flags(widgets, "fancy")


def test_params_clashing_with_a_binary_flag_exit_2(binary_flags, capsys):
  del binary_flags  # Only installed.
  reg = registry.Registry("widget")

  @dataclasses.dataclass(frozen=True)
  class RoundsParams:
    rounds: int = 3

  reg.add("r", lambda: None, params=RoundsParams)
  with pytest.raises(SystemExit) as e:
    cli.define_params_flags(reg)
  assert e.value.code == cli.USER_ERROR_EXIT
  err = capsys.readouterr().err
  assert "hyper-parameter 'rounds' of widget r is already a flag" in err


def test_int_tuple_fields():
  (field,) = plugin_config.param_fields(LayersParams)
  assert field == plugin_config.ParamField(
      "hidden", plugin_config.INT_TUPLE, (500, 500), "Hidden widths.")
  assert field.describe() == "a tuple of int, default (500, 500)"
  # A list (as JSON and YAML give back a recorded tuple) becomes a tuple.
  assert plugin_config.build_params(
      LayersParams, {"hidden": [16, 8]}, "layers l") == LayersParams((16, 8))
  assert plugin_config.build_params(
      LayersParams, {"hidden": ()}, "layers l") == LayersParams(())
  for value in [("16",), (True,), (1.5,), 16, "16,8"]:
    with pytest.raises(UserError, match="layers l: hidden must be a tuple of "
                       "int"):
      plugin_config.build_params(LayersParams, {"hidden": value}, "layers l")
  reg = registry.Registry("layers")
  for bad in [Tuple[str, ...], Tuple[int, int]]:
    params = dataclasses.make_dataclass(
        "P", [("x", bad, dataclasses.field(default=(1,)))], frozen=True)
    with pytest.raises(registry.RegistryError,
                       match=r"or Tuple\[int, ...\]"):
      reg.add("bad", lambda: None, params=params)


def test_int_tuple_flag_is_a_list_of_ints(binary_flags):
  reg = registry.Registry("layers")
  reg.add("mlp", lambda: None, params=LayersParams)
  cli.define_params_flags(reg)
  binary_flags(["prog"])
  # The default's strings, as a hand-written DEFINE_list would record it.
  assert binary_flags["hidden"].value == ["500", "500"]
  assert cli.params_from_flags(reg, "mlp") == LayersParams()
  for argv, hidden in [(["--hidden=16"], (16,)), (["--hidden=16,8"], (16, 8)),
                       (["--hidden="], ())]:
    binary_flags.unparse_flags()
    binary_flags(["prog", *argv])
    assert cli.params_from_flags(reg, "mlp") == LayersParams(hidden)
  binary_flags.unparse_flags()
  binary_flags(["prog", "--hidden=4,x"])
  with pytest.raises(UserError, match="--hidden: expected integers, got 4,x"):
    cli.params_from_flags(reg, "mlp")


def test_params_from_manifest_flags_refuse_a_stale_manifest(binary_flags,
                                                            monkeypatch):
  # The widget kind's flags as if made from a manifest that lacks `shape`.
  from fedclf import plugin_manifest  # pylint: disable=g-import-not-at-top
  widgets = _registry()
  cli.define_params_flags(widgets)
  recorded = plugin_manifest.PluginEntry(
      "widget", "fancy", "tests", "", plugin_config.param_fields(
          WidgetParams)[:-1])
  monkeypatch.setattr(plugin_manifest, "find",
                      lambda kind, name: recorded if name == "fancy" else None)
  monkeypatch.setattr(cli, "_manifest_kinds", {"widget"})
  binary_flags(["prog"])
  with pytest.raises(UserError, match=r"out of date: widget fancy declares "
                     r"size, scale, shiny, label, shape .*; run python -m "
                     r"fedclf.plugin_manifest --write"):
    cli.params_from_flags(widgets, "fancy")
  assert cli.params_from_flags(widgets, "plain") == plugin_config.NoParams()
