"""Binaries answer --help, --helpfull and --list without TensorFlow, from
the plugin manifest, which must match the live registries; TensorFlow's
start-up noise is dropped and its real messages are not."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fedclf import cli
from fedclf import plugin_config
from fedclf import plugin_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

BINARIES = ["simulations.federated", "simulations.ssl_pretrain",
            "simulations.domain_adaptation", "simulations.reproduce",
            "simulations.tables", "simulations.demo", "simulations.tff_worker",
            "baselines.centralized", "fedclf.export", "fedclf.interpret"]

# Runs a binary as `python -m` does, then says whether TensorFlow loaded.
_ANSWER = textwrap.dedent("""\
    import atexit, runpy, sys
    atexit.register(lambda: print(
        "tensorflow loaded:", "tensorflow" in sys.modules, file=sys.stderr))
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    """)


def _python(code, *args, env=None):
  return subprocess.run(
      [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
      text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})))


@pytest.fixture(scope="module")
def live():
  """--list's text and the manifest, from a fresh interpreter that imports
  every built-in plugin (this one may hold test plugins)."""
  proc = _python(
      "import json\nfrom fedclf import plugin_manifest, plugins\n"
      "manifest = plugin_manifest.generate()\n"
      "print(json.dumps({'list': plugins.describe_all(), "
      "'manifest': manifest}))")
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout)


def test_manifest_matches_the_live_registries(live):
  with open(plugin_manifest.MANIFEST_PATH, encoding="utf-8") as f:
    current = f.read()
  assert live["manifest"] == current, (
      f"{plugin_manifest.MANIFEST_PATH} is out of date with the built-in "
      f"plugins: run {plugin_manifest.REFRESH_COMMAND}")


@pytest.mark.parametrize("binary", BINARIES)
@pytest.mark.parametrize("answer", ["--list", "--helpfull"])
def test_answers_without_tensorflow(binary, answer, live):
  proc = _python(_ANSWER, binary, answer)
  if binary == "simulations.tff_worker" and answer == "--list":
    # It has no plugins and no --list: a usage error, as before.
    assert proc.returncode == 2, proc.stderr[-2000:]
  elif answer == "--list":
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == live["list"]
  else:
    main_file = binary.replace(".", os.sep) + (
        f"{os.sep}__main__.py" if binary.startswith("fedclf.") else ".py")
    assert proc.returncode == 1, proc.stderr[-2000:]
    # The binary's own flags under its file's name, then the others'.
    assert f"{os.path.join(ROOT, main_file)}:\n" in proc.stdout
  assert "tensorflow loaded: False" in proc.stderr, proc.stderr[-2000:]
  assert "Unable to register" not in proc.stderr


def test_plugin_flags_come_from_the_manifest():
  proc = _python(_ANSWER, "simulations.federated", "--help")
  assert proc.returncode == 1, proc.stderr[-2000:]
  # Generated flags are fedclf.cli's, so --help (the main module's only)
  # leaves them out and --helpfull shows them, as before.
  assert "--prox_mu:" not in proc.stdout
  assert "tensorflow loaded: False" in proc.stderr
  proc = _python(_ANSWER, "simulations.federated", "--helpfull")
  assert "--prox_mu: fedprox: proximal term weight." in proc.stdout
  assert "--dirichlet_alpha:" in proc.stdout


def test_manifest_round_trips_every_field_kind():
  field = plugin_config.ParamField
  made = plugin_manifest.PluginEntry("widget", "w", "widgets", "A widget.", (
      field("size", plugin_config.INT, 3, "Size."),
      field("scale", plugin_config.FLOAT, 1e-3, ""),
      field("shiny", plugin_config.BOOL, False, ""),
      field("label", plugin_config.STR, "w", ""),
      field("shape", plugin_config.ENUM, "round", "", ("round", "square")),
      field("hidden", plugin_config.INT_TUPLE, (500, 500), "")))
  entries = plugin_manifest.load() + (made,)
  choices = plugin_manifest.flag_choices()
  again = plugin_manifest.from_json(plugin_manifest.to_json(entries, choices))
  assert again == entries
  assert again[-1].fields[-1].default == (500, 500)
  assert "sgd" in choices["optimizers"] and "cosine" in choices["schedules"]


def test_stale_manifest_is_named_with_its_refresh_command():
  entry = next(e for e in plugin_manifest.load() if e.fields)
  assert plugin_manifest.stale_message(entry.kind, entry.name,
                                       entry.fields) is None
  message = plugin_manifest.stale_message(entry.kind, entry.name,
                                          entry.fields[1:])
  assert message and plugin_manifest.REFRESH_COMMAND in message
  assert f"{entry.kind} {entry.name}" in message
  assert plugin_manifest.stale_message(entry.kind, "not_builtin", ()) is None


@pytest.mark.parametrize("args,answers", [
    (["--list"], True), (["--help"], True), (["-?"], True),
    (["--helpfull", "--rounds=3"], True), (["--helpshort"], True),
    (["--list=false"], False), (["--list", "--nolist"], False),
    (["--nolist", "--list=true"], True), (["--rounds=3"], False),
    (["--", "--list"], False), (["--plugin=x", "--list"], True),
])
def test_only_answers(args, answers):
  assert cli.only_answers(["prog", *args]) is answers


def test_only_answers_reads_flagfiles(tmp_path):
  flagfile = tmp_path / "a.cfg"
  flagfile.write_text("--rounds=3\n--list\n")
  assert cli.only_answers(["prog", f"--flagfile={flagfile}"])


_FAKE_TENSORFLOW = textwrap.dedent("""\
    import os
    os.write(2, b"E cuda_dnn.cc] Unable to register cuDNN factory: x\\n")
    os.write(2, b"E cuda_blas.cc] Unable to register cuBLAS factory: x\\n")
    os.write(2, b"E real.cc] a real error\\n")
    if os.environ.get("FAKE_TF_FAILS"):
      raise ImportError("libcudart.so: cannot open shared object file")
    """)

_IMPORT = ("import os\nfrom fedclf import cli\ncli.import_tensorflow()\n"
           "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])")


@pytest.fixture
def fake_tensorflow(tmp_path):
  """A `tensorflow` that writes XLA's noise and a real error to fd 2."""
  (tmp_path / "tensorflow.py").write_text(_FAKE_TENSORFLOW)
  return {"PYTHONPATH": os.pathsep.join([str(tmp_path), ROOT])}


def _without_level(env):
  return {k: v for k, v in env.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def _run_import(env):
  return subprocess.run([sys.executable, "-c", _IMPORT], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)


def test_import_drops_noise_and_keeps_errors(fake_tensorflow):
  proc = _run_import(dict(_without_level(os.environ), **fake_tensorflow))
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == "2"  # The default level.
  assert proc.stderr == "E real.cc] a real error\n"


def test_user_log_level_is_kept_and_zero_shows_everything(fake_tensorflow):
  env = dict(os.environ, **fake_tensorflow)
  proc = _run_import(dict(env, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.stdout.strip() == "3"
  assert "Unable to register" not in proc.stderr
  proc = _run_import(dict(env, TF_CPP_MIN_LOG_LEVEL="0"))
  assert proc.stdout.strip() == "0"
  assert proc.stderr.count("Unable to register") == 2
  assert "a real error" in proc.stderr


def test_failed_import_shows_its_output_and_traceback(fake_tensorflow):
  proc = _run_import(dict(_without_level(os.environ), FAKE_TF_FAILS="1",
                          **fake_tensorflow))
  assert proc.returncode == 1
  assert "a real error" in proc.stderr
  assert "ImportError: libcudart.so" in proc.stderr
  assert "Unable to register" not in proc.stderr


def test_model_flag_choices_match_the_library():
  # The flags list their choices literally so --help needs no TensorFlow;
  # the library's tuples are the truth they must follow. (A subprocess:
  # absl defines flags on the process-wide FLAGS.)
  proc = _python(
      "import json\nfrom absl import flags\nfrom fedclf import cli\n"
      "from fedclf.models import building_blocks as b\n"
      "cli.define_model_flags('group', 'norm')\n"
      "f = flags.FLAGS\n"
      "print(json.dumps([f['norm'].parser.enum_values, list(b.NORMS), "
      "f['weight_init'].parser.enum_values, list(b.WEIGHT_INITS)]))")
  assert proc.returncode == 0, proc.stderr[-2000:]
  flag_norms, norms, flag_inits, inits = json.loads(proc.stdout)
  assert flag_norms == norms
  assert flag_inits == inits
