"""No function in fedclf/ is longer than 100 lines.

A function that long mixes several jobs (the round loop once owned data
setup, the loop, evaluation, personalization and DP accounting in one
class); the limit keeps each piece small enough to test alone. Lines are
counted from the `def` to the last line of the body, docstring included.
"""

import ast
import pathlib

LIMIT = 100
PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "fedclf"


def long_functions(package: pathlib.Path = PACKAGE, limit: int = LIMIT):
  found = []
  for path in sorted(package.rglob("*.py")):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        if length > limit:
          found.append(f"{path.relative_to(package.parent)}:{node.lineno} "
                       f"{node.name} ({length} lines)")
  return found


def test_no_function_is_longer_than_the_limit():
  assert not long_functions(), "\n".join(long_functions())


def test_the_check_finds_a_long_method(tmp_path):
  package = tmp_path / "pkg"
  package.mkdir()
  body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
  (package / "mod.py").write_text(
      f"class A:\n  def short(self):\n    pass\n\n"
      f"  def long(self):\n{body}\n")
  assert long_functions(package) == [
      f"pkg/mod.py:5 long ({LIMIT + 1} lines)"]
