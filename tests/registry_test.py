"""The shared plugin registry and plugin loading."""

import os
import subprocess
import sys
import types

import pytest

from fedclf import plugins
from fedclf import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_register_get_names_and_duplicates():
  reg = registry.Registry("widget")

  @reg.register("b")
  def b():
    return "b"

  reg.add("a", lambda: "a")
  assert reg.names() == ["a", "b"]
  assert reg.get("b") is b and "a" in reg and len(reg) == 2
  with pytest.raises(registry.DuplicateNameError, match="widget 'b'"):
    reg.add("b", lambda: None)
  with pytest.raises(registry.UnknownNameError,
                     match=r"unknown widget 'c'; choose one of: a, b"):
    reg.get("c")
  with pytest.raises(registry.RegistryError):
    reg.add(" padded ", lambda: None)


def test_builtins_and_describe_all():
  plugins.load_builtins()
  text = plugins.describe_all()
  assert "datasets: cifar10, digits" in text
  assert "partitioners:" in text and "dirichlet" in text
  assert "models:" in text and "cnn" in text


def test_plugin_module_loads_and_errors_name_plugin(monkeypatch):
  good = types.ModuleType("fedclf_test_plugin_good")
  exec("from fedclf.registry import MODELS\n"
       "MODELS.add('plugin_test_model', lambda *a: None)", good.__dict__)
  monkeypatch.setitem(sys.modules, "fedclf_test_plugin_good", good)
  assert plugins.load_plugins(["fedclf_test_plugin_good"],
                              use_entry_points=False) == [
                                  "fedclf_test_plugin_good"]

  with pytest.raises(registry.PluginImportError,
                     match="plugin 'fedclf_no_such_module'"):
    plugins.load_plugins(["fedclf_no_such_module"], use_entry_points=False)


def test_plugin_name_clash_is_reported(tmp_path, monkeypatch):
  (tmp_path / "fedclf_test_clash.py").write_text(
      "from fedclf.registry import DATASETS\n"
      "DATASETS.add('mnist', lambda config: None)\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  with pytest.raises(registry.DuplicateNameError,
                     match="plugin 'fedclf_test_clash'.*dataset 'mnist'"):
    plugins.load_plugins(["fedclf_test_clash"], use_entry_points=False)


def _fedclf_modules_after(statement: str):
  # A fresh interpreter: this test process has imported most of fedclf.
  code = (f"import sys\n{statement}\n"
          "print(' '.join(sorted(m for m in sys.modules\n"
          "                      if m.split('.')[0] == 'fedclf')))\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                        capture_output=True, text=True, timeout=120,
                        check=True)
  return proc.stdout.split()


def test_registry_imports_no_other_fedclf_module():
  # Every plugin imports the registry; were it to import fedclf back, the
  # plugins and the registry would form one import cycle.
  assert _fedclf_modules_after("import fedclf.registry") == [
      "fedclf", "fedclf.registry"]


def test_plugins_loads_builtins_only_when_asked():
  # fedclf.cli imports fedclf.plugins; the packages (and TensorFlow) load in
  # load_plugins, after flags parse, not on import.
  assert _fedclf_modules_after("import fedclf.plugins") == [
      "fedclf", "fedclf.plugins", "fedclf.registry"]
  loaded = _fedclf_modules_after(
      "import fedclf.plugins\nfedclf.plugins.load_builtins()")
  for package in ("adapt", "data", "federated", "models", "partition", "ssl"):
    assert f"fedclf.{package}" in loaded
