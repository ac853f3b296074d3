"""Runs several command lines of one fedclf binary in one Python process.

  echo '[{"args": [...], "stdout": "path"}, ...]' | \
      python -m docs.guide.runner simulations.federated

Used by the guide's build (`Context.run_all`): TensorFlow takes 10-30 s to
import on a small machine, more than many of the guide's runs take to
train, so the commands of one binary share a process. Each command is what
the binary's own `cli.run` does with it: the binary's flags are reset and
parsed from the command line, plugins load, and its `main` runs with
`sys.argv` set to that command line (which `config.json` records) and its
--out_dir claimed; its printed output goes to the job's "stdout" file.

Exit status: 0 when every command succeeded; 2 after a user error (one line
on stderr, as the binary would print); otherwise the traceback and 1.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys

# TensorFlow before absl parses anything (see fedclf.cli.run).
import tensorflow  # noqa: F401  pylint: disable=unused-import
from absl import flags
from absl import logging

from fedclf import cli
from fedclf import plugins
from fedclf import registry
from fedclf.errors import UserError
from fedclf.results.record import atomic_write_text


def run_jobs(module_name: str, jobs) -> int:
  module = importlib.import_module(module_name)
  if hasattr(module, "__path__"):  # a package: `python -m` runs __main__
    module = importlib.import_module(f"{module_name}.__main__")
  logging.use_absl_handler()
  for k, job in enumerate(jobs, start=1):
    argv = [module.__file__, *job["args"]]
    print(f"[{k}/{len(jobs)}] python -m {module_name} {' '.join(job['args'])}",
          file=sys.stderr, flush=True)
    flags.FLAGS.unparse_flags()
    try:
      flags.FLAGS(argv)
    except flags.Error as e:
      print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
      return 2
    sys.argv = argv
    printed = io.StringIO()
    try:
      plugins.load_plugins(flags.FLAGS.plugin)
      with contextlib.redirect_stdout(printed), cli.claim_out_dir():
        module.main([argv[0]])
    except (UserError, registry.RegistryError) as e:
      print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
      return 2
    finally:
      sys.stdout.write(printed.getvalue())
    atomic_write_text(job["stdout"], printed.getvalue())
  return 0


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit("usage: python -m docs.guide.runner MODULE < jobs.json")
  sys.exit(run_jobs(sys.argv[1], json.load(sys.stdin)))
