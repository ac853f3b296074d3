"""Finds the commands and Python imports the guide quotes, for the drift
test (`tests/guide/guide_commands_test.py`).

Commands are the lines of ```bash / ```sh blocks (backslash continuations
joined, comments skipped) and, outside code blocks, inline code spans or
lines that start with `python -m`. Each is classified:

- `python -m MODULE ARGS`: a fedclf binary, checked by `docs.guide.flagcheck`
  (flags parsed by the binary's own absl definitions, registry names
  looked up, specs expanded into their runs); `docs.guide.snippets.*`
  modules must exist;
- `make TARGET`: the target must be in the Makefile;
- `pip install -e PATH`: PATH must exist;
- a few programs that are not fedclf's (TF Serving's container, curl,
  TensorBoard, Node) are accepted as they are: `EXTERNAL_PROGRAMS`;
- anything else is an error.

This module is plain Python (no TensorFlow), so extraction tests are fast.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from typing import Dict, List, Optional, Tuple

PYTHONS = ("python", "python3", ".venv/bin/python", "$(PY)")
# Programs the guide mentions that fedclf cannot check: deployment tooling
# of chapter 8 and TensorBoard (which reads the runs' tb/ folders).
EXTERNAL_PROGRAMS = ("docker", "curl", "tensorboard", "saved_model_cli",
                     "node", "cd", "export")
SHELL_BLOCKS = ("bash", "sh", "shell", "console")
_FENCE = re.compile(r"^\s*```\s*([A-Za-z0-9_+-]*)\s*$")
_INLINE = re.compile(r"`([^`\n]+)`")
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=")


@dataclasses.dataclass(frozen=True)
class Quoted:
  """One quoted command: where it is, its words and its environment."""
  source: str  # "file:line"
  text: str
  env: Tuple[Tuple[str, str], ...]
  words: Tuple[str, ...]

  @property
  def program(self) -> str:
    return self.words[0] if self.words else ""

  @property
  def module(self) -> Optional[str]:
    """The module of `python -m MODULE ...`, else None."""
    if self.program in PYTHONS and len(self.words) > 2 and (
        self.words[1] == "-m"):
      return self.words[2]
    return None

  @property
  def args(self) -> Tuple[str, ...]:
    return self.words[3:] if self.module else self.words[1:]


def _split(text: str, source: str) -> Optional[Quoted]:
  text = text.strip()
  if text.startswith("$ "):
    text = text[2:]
  if not text or text.startswith("#"):
    return None
  try:
    words = shlex.split(text, comments=True)
  except ValueError as e:
    return Quoted(source, text, (), ("<unparseable>", str(e)))
  env = []
  while words and _ENV.match(words[0]):
    name, value = words.pop(0).split("=", 1)
    env.append((name, value))
  return Quoted(source, text, tuple(env), tuple(words))


def extract(markdown: str, name: str) -> Tuple[List[Quoted], List[Tuple[str, str]]]:
  """(commands, python blocks as (source, code)) quoted in `markdown`."""
  commands: List[Quoted] = []
  python_blocks: List[Tuple[str, str]] = []
  lines = markdown.splitlines()
  fence: Optional[str] = None
  block: List[str] = []
  block_start = 0
  pending, pending_line = "", 0
  for number, line in enumerate(lines, start=1):
    match = _FENCE.match(line)
    if fence is None and match:
      fence, block, block_start = match.group(1).lower(), [], number
      continue
    if fence is not None and match and not match.group(1):
      if fence == "python":
        python_blocks.append((f"{name}:{block_start}", "\n".join(block)))
      fence = None
      continue
    if fence is not None:
      block.append(line)
      if fence in SHELL_BLOCKS:
        if not pending:
          pending_line = number
        if line.rstrip().endswith("\\"):
          pending += line.rstrip()[:-1] + " "
          continue
        quoted = _split(pending + line, f"{name}:{pending_line}")
        pending = ""
        if quoted:
          commands.append(quoted)
      continue
    spans = _INLINE.findall(line)
    if line.lstrip().startswith("python -m"):
      spans.append(line.strip())
    for span in spans:
      if span.startswith(("python -m ", "make ", "pip install")):
        quoted = _split(span, f"{name}:{number}")
        if quoted:
          commands.append(quoted)
  return commands, python_blocks


def guide_pages(guide_dir: str) -> List[str]:
  """The rendered pages: README.md and NN-*.md."""
  return sorted(os.path.join(guide_dir, f) for f in os.listdir(guide_dir)
                if f == "README.md" or re.match(r"\d\d-.*\.md$", f))


def makefile_targets(path: str) -> List[str]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+):(?!=)",
                                            f.read(), re.MULTILINE)]


def check_without_python(commands: List[Quoted],
                         repo_root: str) -> Tuple[List[Quoted], List[str]]:
  """Checks what needs no import; returns (the `python -m` commands left
  for `docs.guide.flagcheck`, error messages)."""
  left, errors = [], []
  targets = makefile_targets(os.path.join(repo_root, "Makefile"))
  for c in commands:
    where = f"{c.source}: {c.text}"
    if c.module:
      if c.module.startswith("docs.guide.snippets."):
        path = os.path.join(repo_root, *c.module.split(".")) + ".py"
        if not os.path.exists(path):
          errors.append(f"{where}: no snippet file {path}")
        elif c.args:
          errors.append(f"{where}: snippets take no arguments")
      else:
        left.append(c)
    elif c.program == "make":
      missing = [t for t in c.args if not t.startswith("-") and "=" not in t
                 and t not in targets]
      if missing:
        errors.append(f"{where}: no Makefile target {missing[0]!r}")
    elif c.program == "pip" and c.args[:2] == ("install", "-e"):
      if len(c.args) < 3 or not os.path.exists(os.path.join(repo_root,
                                                            c.args[2])):
        errors.append(f"{where}: nothing to install at {c.args[2:3]}")
    elif c.program not in EXTERNAL_PROGRAMS:
      errors.append(f"{where}: unknown program {c.program!r} (not a "
                    f"fedclf binary, make target or known external tool)")
  return left, errors


def flagcheck_jobs(commands: List[Quoted]) -> List[Dict]:
  """The JSON jobs `docs.guide.flagcheck` reads."""
  return [{"source": c.source, "text": c.text, "module": c.module,
           "args": list(c.args), "pythonpath": dict(c.env).get("PYTHONPATH", "")}
          for c in commands]
