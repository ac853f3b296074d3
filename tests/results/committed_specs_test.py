"""Every committed experiment spec names flags its binary has, with values
the flags accept.

A paper table's grid runs for hours; a misspelt flag or an enum value a
binary no longer takes would otherwise surface only when the grid reaches
that run, possibly in a later session. The flags are read from each
binary's `--helpxml` (absl's machine-readable help, answered from the
plugin manifest without importing TensorFlow), once per binary.
"""

import functools
import glob
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import Dict, NamedTuple, Tuple

import pytest

from fedclf.results import grid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class Flag(NamedTuple):
  type: str
  choices: Tuple[str, ...]


@functools.lru_cache(maxsize=None)
def binary_flags(binary: str) -> Dict[str, Flag]:
  out = subprocess.run([sys.executable, "-m", binary, "--helpxml"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       check=False)
  # absl answers --helpxml and exits 1; the XML is the proof it answered.
  assert out.stdout.lstrip().startswith("<?xml"), out.stderr[-2000:]
  flags = {}
  for flag in ET.fromstring(out.stdout).iter("flag"):
    flags[flag.findtext("name")] = Flag(
        flag.findtext("type"),
        tuple(e.text for e in flag.findall("enum_value")))
  return flags


def _grid_specs():
  for path in sorted(glob.glob(os.path.join(ROOT, "experiments", "*.yaml"))):
    with open(path) as f:
      # Comparison specs (simulations.tables --compare) have no binary.
      if any(line.startswith("binary:") for line in f):
        yield os.path.relpath(path, ROOT)


def _value_error(flag: Flag, value) -> str:
  """Why `value` does not parse as `flag`, or ''."""
  text = str(value).lower() if isinstance(value, bool) else str(value)
  if flag.choices and text not in flag.choices:
    return f"not one of {'/'.join(flag.choices)}"
  try:
    if flag.type == "int":
      int(text)
    elif flag.type == "float":
      float(text)
  except ValueError:
    return "not an integer" if flag.type == "int" else "not a number"
  if flag.type == "bool" and text not in ("true", "false", "1", "0"):
    return "not a bool"
  return ""


def test_the_committed_specs_are_found():
  specs = list(_grid_specs())
  assert "experiments/niid_bench_extended.yaml" in specs
  assert len(specs) >= 20


@pytest.mark.parametrize("path", list(_grid_specs()))
def test_spec_flags_exist_and_parse(path):
  spec = grid.load_spec(os.path.join(ROOT, path))
  known = binary_flags(spec.binary)
  problems = []
  for run in spec.runs:
    for name, value in run.flags.items():
      flag = known.get(name)
      if flag is None:
        problems.append(f"{run.name}: --{name} is not a flag of "
                        f"{spec.binary}")
      elif _value_error(flag, value):
        problems.append(f"{run.name}: --{name}={value} is "
                        f"{_value_error(flag, value)}")
  assert not problems, "\n".join(problems[:20])


def test_a_misspelt_flag_and_a_bad_choice_are_caught(tmp_path):
  """The check itself: a spec with a typo and an unknown enum value."""
  spec_path = tmp_path / "bad.yaml"
  spec_path.write_text(
      "binary: simulations.federated\nout_dir: x\n"
      "runs:\n  - {name: a, partition: quantity_skew, client_size: dirichlet}\n"
      "  - {name: b, partition: quantity_skew, client_sizes: zipf}\n"
      "  - {name: c, rounds: ten}\n")
  spec = grid.load_spec(str(spec_path))
  known = binary_flags(spec.binary)
  assert "client_size" not in known
  assert _value_error(known["client_sizes"], "zipf").startswith("not one of")
  assert _value_error(known["client_sizes"], "dirichlet") == ""
  assert _value_error(known["rounds"], "ten") == "not an integer"
  assert _value_error(known["overwrite"], True) == ""
