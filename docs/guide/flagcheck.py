"""Checks quoted `python -m` commands against the binaries' own flags.

  python -m docs.guide.flagcheck < jobs.json    # from docs.guide.commands

One process checks every binary (TensorFlow is imported once): a binary
module is imported (which defines its absl flags), each of its commands is
parsed with `FLAGS(argv)` exactly as the binary would parse it, then the
module's flags are deleted again so the next binary can define its own.
The --plugin modules of a binary's commands are imported before the binary,
so their hyper-parameter flags exist (as when the binary runs). Beyond
parsing, registered names (--dataset, --model, --algorithm,
--partition, --method, --backend) must exist (plugins named by --plugin are loaded
first), and a `simulations.reproduce --spec=FILE` command expands into the
runs of that spec, each checked against the spec's binary.

Python blocks quoted in the guide must compile, and their fedclf imports
must resolve (the names exist); they are not run.

Reads {"commands": [...jobs], "python_blocks": [[source, code], ...]} and
prints a JSON list of {"source", "text", "error"} for the failures.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import sys
from typing import Dict, List

# TensorFlow before absl parses anything (see fedclf.cli.run).
import tensorflow  # noqa: F401  pylint: disable=unused-import
from absl import flags

from fedclf import cli
from fedclf import plugins
from fedclf import registry

# Which registry a flag's value must be in, per binary ("*": any binary).
_REGISTRY_FLAGS = {
    "*": {"dataset": registry.DATASETS, "model": registry.MODELS,
          "algorithm": registry.ALGORITHMS,
          "partition": registry.PARTITIONERS},
    "simulations.federated": {"backend": registry.BACKENDS},
    "simulations.ssl_pretrain": {"method": registry.SSL_METHODS},
    "simulations.domain_adaptation": {"method": registry.ADAPTATION_METHODS},
}


def _names_error(module: str) -> str:
  f = flags.FLAGS
  checks = {**_REGISTRY_FLAGS["*"], **_REGISTRY_FLAGS.get(module, {})}
  if "federated" in f and f["federated"].value:
    # domain_adaptation --federated has methods of its own (self_training),
    # which the binary checks itself.
    checks.pop("method", None)
  for name, reg in checks.items():
    if name in f and f[name].present and f[name].value not in reg:
      return (f"--{name}={f[name].value}: no {reg.kind} of that name "
              f"(known: {', '.join(reg.names())})")
  return ""


def _check(module: str, args: List[str]) -> str:
  """'' when `python -m module args` parses, else why not."""
  flags.FLAGS.unparse_flags()
  try:
    rest = flags.FLAGS([module, *args])
  except flags.Error as e:
    return " ".join(str(e).split())
  if len(rest) > 1:
    return f"unexpected arguments: {' '.join(rest[1:])}"
  if "plugin" in flags.FLAGS:
    try:
      plugins.load_plugins(flags.FLAGS.plugin)
    except registry.RegistryError as e:
      return str(e)
  return _names_error(module)


def _expand_spec(job: Dict) -> List[Dict]:
  """The runs of a reproduce --spec command, as jobs of the spec's binary."""
  from fedclf.errors import UserError  # pylint: disable=g-import-not-at-top
  from fedclf.results import grid  # pylint: disable=g-import-not-at-top
  spec_path = next((a.split("=", 1)[1] for a in job["args"]
                    if a.startswith("--spec=")), "")
  if not spec_path:
    return []
  try:
    spec = grid.load_spec(spec_path)
  except UserError as e:
    return [{**job, "error": str(e)}]
  runs = list(spec.runs)
  if spec.search is not None:  # the final runs, with one trial's values
    runs += grid.final_runs(spec, {"chosen": spec.search.trial_values()[0]})
  return [{**job, "module": spec.binary, "text": f"{job['text']} "
           f"(spec run {run.name})", "args": grid.command(spec, run)[3:]}
          for run in runs]


def check_python_blocks(blocks) -> List[Dict]:
  """Each block compiles and its `import`/`from ... import` of fedclf work."""
  failures = []
  for source, code in blocks:
    try:
      tree = ast.parse(code)
    except SyntaxError as e:
      failures.append({"source": source, "text": code.splitlines()[0],
                       "error": f"does not compile: {e}"})
      continue
    for node in ast.walk(tree):
      if not isinstance(node, (ast.Import, ast.ImportFrom)):
        continue
      statement = ast.unparse(node)
      try:
        exec(statement, {})  # pylint: disable=exec-used
      except Exception as e:  # pylint: disable=broad-except
        failures.append({"source": source, "text": statement,
                         "error": f"{type(e).__name__}: {e}"})
  return failures


def _load_plugins_of(module: str, jobs: List[Dict]) -> None:
  """Imports the --plugin modules of `jobs` before their binary is imported:
  the binary defines the plugins' hyper-parameter flags at import (from its
  sys.argv when run), so they must be registered by then. One that fails
  to import is reported by `_check`."""
  for job in jobs:
    for plugin in cli.plugins_named_in([module, *job["args"]]):
      try:
        plugins.load_plugins([plugin], use_entry_points=False)
      except registry.RegistryError:
        pass


def check_jobs(jobs: List[Dict]) -> List[Dict]:
  plugins.load_builtins()
  failures = []
  for job in list(jobs):
    if job["module"] == "simulations.reproduce":
      jobs.extend(_expand_spec(job))
  for path in {j["pythonpath"] for j in jobs if j["pythonpath"]}:
    sys.path.insert(0, os.path.abspath(path))
  absl_flags = set(flags.FLAGS)
  modules = list(dict.fromkeys(j["module"] for j in jobs))
  for module in modules:
    mine = [j for j in jobs if j["module"] == module]
    _load_plugins_of(module, mine)
    # A package's flags live in its __main__, which `python -m` runs.
    defining = module
    try:
      if hasattr(importlib.import_module(module), "__path__"):
        defining = f"{module}.__main__"
        importlib.import_module(defining)
      for job in mine:
        error = job.get("error") or _check(module, job["args"])
        if error:
          failures.append({**job, "error": error})
    except ImportError as e:
      failures += [{**j, "error": f"no module {module}: {e}"} for j in mine]
    finally:
      # Make room for the next binary's definitions of the same flag names.
      for name in set(flags.FLAGS) - absl_flags:
        delattr(flags.FLAGS, name)
      sys.modules.pop(defining, None)
  return [{"source": f["source"], "text": f["text"], "error": f["error"]}
          for f in failures]


if __name__ == "__main__":
  request = json.load(sys.stdin)
  print(json.dumps(check_jobs(request["commands"]) +
                   check_python_blocks(request["python_blocks"]), indent=1))
