"""Several command lines of one binary answered in one Python process.

Importing TensorFlow costs a binary's process seconds of CPU, more than a
refused command line takes to answer, and tests check dozens of those.
`run_commands` answers a list of command lines of one binary in one child
process, each as the binary's own `cli.run` would (`fedclf.cli.
run_in_process`), and returns one `subprocess.CompletedProcess` per command
line (exit status, stdout, stderr), as running each alone would.

Use it for answers that do not depend on the process itself (refusals,
--list, short runs); signals, pipes and exit paths need a process each:
`start_binary` starts one.
"""

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
from typing import List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_binary(module: str, args: Sequence[str],
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                 text: bool = True) -> subprocess.Popen:
  """`python -m module *args` in a process of its own, from the repository
  root with TensorFlow's logging quiet: for tests that signal, kill or
  pipe a binary."""
  return subprocess.Popen(
      [sys.executable, "-m", module, *args], cwd=ROOT,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), stdout=stdout,
      stderr=stderr, text=text)


def run_commands(module: str, commands: Sequence[Sequence[str]],
                 timeout: float = 600, python_path: Sequence[str] = ()
                 ) -> List[subprocess.CompletedProcess]:
  """The answers of `python -m module *args` for each `args` of
  `commands`, all from one process (with `python_path` before
  $PYTHONPATH)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
      [*python_path, os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run(
      [sys.executable, "-m", "tests.binary_batch", module],
      input=json.dumps([list(args) for args in commands]), cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=timeout)
  if proc.returncode != 0:
    raise AssertionError(f"the batch of {module} failed:\n"
                         f"{proc.stderr[-3000:]}")
  answers = json.loads(proc.stdout.strip().splitlines()[-1])
  return [subprocess.CompletedProcess([module, *args], a["returncode"],
                                      a["stdout"], a["stderr"])
          for args, a in zip(commands, answers)]


def assert_one_error_line(proc: subprocess.CompletedProcess,
                          message: str = "") -> str:
  """Exit status 2, no traceback and one 'error' line, which holds
  `message`; returns that line."""
  assert proc.returncode == 2, proc.stderr[-1500:]
  assert "Traceback" not in proc.stderr, proc.stderr[-1500:]
  errors = [l for l in proc.stderr.splitlines() if "error" in l]
  assert len(errors) == 1 and message in errors[0], proc.stderr[-1500:]
  return errors[0]


def _answer(module, args):
  # pylint: disable=g-import-not-at-top
  from absl import logging
  from fedclf import cli
  argv = [module.__file__, *args]
  sys.argv = argv
  out, err = io.StringIO(), io.StringIO()
  handler = logging.get_absl_handler().python_handler
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    handler.stream = err
    try:
      status = cli.run_in_process(module.main, argv)
    finally:
      handler.stream = sys.__stderr__
  return {"returncode": status, "stdout": out.getvalue(),
          "stderr": err.getvalue()}


def _main(module_name: str) -> None:
  # TensorFlow before absl parses anything (see fedclf.cli.run).
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  app.define_help_flags()  # --help, --helpfull: app.run defines them
  commands = json.load(sys.stdin)
  # A binary defines its plugins' flags on import, for the --plugin modules
  # of the command line it finds in sys.argv (fedclf.cli.define_params_flags).
  sys.argv = [module_name, *(arg for args in commands for arg in args
                             if arg.startswith("--plugin="))]
  module = importlib.import_module(module_name)
  if hasattr(module, "__path__"):  # a package: `python -m` runs __main__
    module = importlib.import_module(f"{module_name}.__main__")
  logging.use_absl_handler()
  answers = [_answer(module, args) for args in commands]
  print(json.dumps(answers))


if __name__ == "__main__":
  _main(sys.argv[1])
