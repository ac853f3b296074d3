"""Runs several command lines of one fedclf binary in one Python process.

  echo '[{"args": [...], "stdout": "path"}, ...]' | \
      python -m docs.guide.runner simulations.federated

Used by the guide's build (`Context.run_all`): TensorFlow takes 10-30 s to
import on a small machine, more than many of the guide's runs take to
train, so the commands of one binary share a process. Each command is answered
as the binary's own `cli.run` would (`cli.run_in_process`): flags reset and
parsed from the command line, plugins loaded, its --out_dir claimed, and
its `main` run with `sys.argv` set to that command line (which
`config.json` records); its printed output goes to the job's "stdout"
file.

Exit status: 0 when every command succeeded; otherwise the first failing
command's (2 after a user error, with its one line on stderr; a traceback
and 1 after a bug).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys

# TensorFlow before absl parses anything (see fedclf.cli.run).
import tensorflow  # noqa: F401  pylint: disable=unused-import
from absl import logging

from fedclf import cli
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
    sys.argv = argv
    printed = io.StringIO()
    try:
      with contextlib.redirect_stdout(printed):
        status = cli.run_in_process(module.main, argv)
    finally:
      sys.stdout.write(printed.getvalue())
    if status:
      return status
    atomic_write_text(job["stdout"], printed.getvalue())
  return 0


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit("usage: python -m docs.guide.runner MODULE < jobs.json")
  sys.exit(run_jobs(sys.argv[1], json.load(sys.stdin)))
