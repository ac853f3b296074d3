"""No import cycle among fedclf's modules.

The graph is built statically (ast; nothing is imported), one node per
module of the `fedclf` package, `pkg/__init__.py` being the node `pkg`.
An import statement in module M adds the edges that Python would run when
executing it:

* `import a.b.c` and `from a.b.c import name`: M -> a.b.c, and M -> every
  parent package of a.b.c (a, a.b), because importing a submodule first runs
  its parents' `__init__.py`. A parent that is also a parent of M is left
  out: it is already being imported when M runs, so that import is a no-op
  (this is what makes `pkg/__init__.py` importing `pkg.sub` not a cycle by
  itself).
* `from a.b import name`: also M -> a.b.name when a.b.name is a module;
  otherwise `name` is defined in a/b/__init__.py and the edge M -> a.b is
  kept even when a.b is M's own package. Such an import from one's own
  package is the usual cycle: `pkg/__init__.py` re-exports `pkg.sub`, and
  `pkg.sub` imports a name from `pkg` that may not be defined yet.
* Relative imports are resolved against M's package.

Which imports count:

* `test_no_import_time_cycles` (strict): every import that runs when M is
  imported, i.e. every import statement outside a function body, including
  those inside top-level `try`/`if`/`with` blocks and class bodies, except
  under `if TYPE_CHECKING:` (which never runs).
* `test_no_cycles_through_deferred_imports` (strict too): the same graph
  plus the imports inside function bodies. These are deferred and cannot
  break an import, but a cycle through them still means two layers that
  each reach into the other. There was one, through 44 modules: every
  plugin package imports `fedclf.registry`, and `registry.load_builtins`
  imported every plugin package. Loading now lives in `fedclf.plugins`,
  above both, and no other cycle exists, so this test is as strict as the
  first. (Deferred imports of heavy optional dependencies such as TFF are
  fine: only edges between fedclf's own modules are looked at.)

Not seen: imports by name at run time (`importlib.import_module`, as
`fedclf.plugins` does for third-party plugins), and modules outside
`fedclf/` (the binaries in simulations/ and baselines/ import fedclf; fedclf
never imports them).

A failure lists every strongly connected component with one concrete cycle
through it, as `a -> b -> a` with the line of each import.
"""

import ast
import os
import sys
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "fedclf"

# (importer, imported) -> "path:line" of the first import making that edge.
Edges = Dict[Tuple[str, str], str]


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[:-len(".py")].split(os.sep)
  if rel[-1] == "__init__":
    rel = rel[:-1]
  return ".".join(rel)


def find_modules(package: str = PACKAGE) -> Dict[str, str]:
  """Module name -> file path, for every .py file under the package."""
  modules = {}
  for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, package)):
    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
    # A directory without __init__.py is not a regular package; fedclf has
    # none, and counting its files as submodules would invent edges.
    if "__init__.py" not in filenames:
      dirnames[:] = []
      continue
    for filename in sorted(filenames):
      if filename.endswith(".py"):
        path = os.path.join(dirpath, filename)
        modules[_module_name(path)] = path
  return modules


def _is_type_checking(test: ast.expr) -> bool:
  return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or
          (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.Module) -> Iterator[Tuple[ast.stmt, bool]]:
  """Every import statement, with whether it is inside a function body."""

  def visit(nodes: Iterable[ast.AST],
            deferred: bool) -> Iterator[Tuple[ast.stmt, bool]]:
    for node in nodes:
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, deferred
      elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        yield from visit(ast.iter_child_nodes(node), True)
      elif isinstance(node, ast.If) and _is_type_checking(node.test):
        # The body never runs; only the else branch does.
        yield from visit(node.orelse, deferred)
      else:
        yield from visit(ast.iter_child_nodes(node), deferred)

  yield from visit(tree.body, False)


def _parents(name: str) -> List[str]:
  parts = name.split(".")
  return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve_relative(module: str, is_package: bool, level: int,
                      target: Optional[str]) -> str:
  base = module.split(".")
  if not is_package:
    base = base[:-1]
  if level > 1:
    base = base[:-(level - 1)]
  return ".".join(base + ([target] if target else []))


def build_graph(include_deferred: bool,
                modules: Optional[Dict[str, str]] = None) -> Edges:
  """The import edges between fedclf modules (see the module docstring)."""
  modules = find_modules() if modules is None else modules
  edges: Edges = {}
  for module, path in modules.items():
    is_package = path.endswith("__init__.py")
    own_parents = set(_parents(module))
    if is_package:
      own_parents.add(module)
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), filename=path)
    where_prefix = os.path.relpath(path, ROOT)

    def add(target: str, node: ast.stmt, explicit: bool) -> None:
      # An implicit parent (or M itself) is already importing: no edge.
      if target not in modules or target == module:
        return
      if not explicit and target in own_parents:
        return
      edges.setdefault((module, target), f"{where_prefix}:{node.lineno}")

    for node, deferred in _imports(tree):
      if deferred and not include_deferred:
        continue
      if isinstance(node, ast.Import):
        for alias in node.names:
          for parent in _parents(alias.name):
            add(parent, node, explicit=False)
          add(alias.name, node, explicit=False)
        continue
      if node.level:
        source = _resolve_relative(module, is_package, node.level, node.module)
      else:
        source = node.module or ""
      for parent in _parents(source):
        add(parent, node, explicit=False)
      names_submodule_only = all(
          f"{source}.{alias.name}" in modules for alias in node.names)
      # `from pkg import sub` with sub a module needs pkg's __init__ only
      # as an (implicit) parent; `from pkg import name` needs its contents.
      add(source, node, explicit=not names_submodule_only)
      for alias in node.names:
        add(f"{source}.{alias.name}", node, explicit=False)
  return edges


def strongly_connected_components(edges: Edges) -> List[List[str]]:
  """Tarjan's algorithm, iterative; only components that hold a cycle."""
  graph: Dict[str, List[str]] = {}
  for src, dst in sorted(edges):
    graph.setdefault(src, []).append(dst)
    graph.setdefault(dst, [])
  index: Dict[str, int] = {}
  low: Dict[str, int] = {}
  stack: List[str] = []
  on_stack: Set[str] = set()
  components = []
  for root in sorted(graph):
    if root in index:
      continue
    work = [(root, iter(graph[root]))]
    index[root] = low[root] = len(index)
    stack.append(root)
    on_stack.add(root)
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is not None:
        if child not in index:
          index[child] = low[child] = len(index)
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(graph[child])))
        elif child in on_stack:
          low[node] = min(low[node], index[child])
        continue
      work.pop()
      if work:
        parent = work[-1][0]
        low[parent] = min(low[parent], low[node])
      if low[node] == index[node]:
        component = []
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.append(member)
          if member == node:
            break
        if len(component) > 1 or (node, node) in edges:
          components.append(sorted(component))
  return sorted(components)


def _one_cycle(component: List[str], edges: Edges) -> List[str]:
  """A shortest cycle through the component's first module (BFS)."""
  members = set(component)
  start = component[0]
  previous: Dict[str, str] = {}
  frontier = [start]
  while frontier:
    following = []
    for node in frontier:
      for src, dst in sorted(edges):
        if src != node or dst not in members:
          continue
        if dst == start:
          path = [node]
          while path[-1] != start:
            path.append(previous[path[-1]])
          return path[::-1] + [start]
        if dst not in previous:
          previous[dst] = node
          following.append(dst)
    frontier = following
  raise AssertionError(f"no cycle through {start}")


def describe_cycles(edges: Edges) -> str:
  lines = []
  for component in strongly_connected_components(edges):
    cycle = _one_cycle(component, edges)
    lines.append(f"{len(component)} modules: {', '.join(component)}")
    steps = [f"{a} -> {b} ({edges[(a, b)]})"
             for a, b in zip(cycle, cycle[1:])]
    lines.append("  e.g. " + "\n       ".join(steps))
  return "\n".join(lines)


def test_graph_sees_the_package():
  modules = find_modules()
  assert "fedclf.registry" in modules and "fedclf.federated" in modules
  edges = build_graph(include_deferred=False, modules=modules)
  # Sanity: the analyser does find edges, through `from pkg import name`.
  assert ("fedclf.models", "fedclf.registry") in edges


def test_finds_a_planted_cycle(tmp_path, monkeypatch):
  pkg = tmp_path / "fakepkg"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("from fakepkg.sub import thing\n")
  (pkg / "sub" / "__init__.py").write_text("from fakepkg.sub.a import thing\n")
  (pkg / "sub" / "a.py").write_text(
      "def thing():\n  from fakepkg import other\n")
  (pkg / "sub" / "b.py").write_text("from . import a\nfrom .. import sub\n")
  (pkg / "other.py").write_text("from fakepkg.sub import b\n")
  monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
  modules = find_modules("fakepkg")
  assert set(modules) == {"fakepkg", "fakepkg.sub", "fakepkg.sub.a",
                          "fakepkg.sub.b", "fakepkg.other"}
  eager = build_graph(include_deferred=False, modules=modules)
  # `from .. import sub` names a module; `from . import a` too: no edge to
  # the own package, so b alone is acyclic.
  assert ("fakepkg.sub.b", "fakepkg.sub") not in eager
  assert ("fakepkg.sub.b", "fakepkg.sub.a") in eager
  assert strongly_connected_components(eager) == []
  deferred = build_graph(include_deferred=True, modules=modules)
  # a -> other (deferred) -> sub (parent of sub.b) -> a, and
  # other -> sub.b -> a -> other.
  assert strongly_connected_components(deferred) == [
      ["fakepkg.other", "fakepkg.sub", "fakepkg.sub.a", "fakepkg.sub.b"]]
  assert "fakepkg.sub.a -> fakepkg.other" in describe_cycles(deferred)


def test_finds_a_cycle_through_a_package_init(tmp_path, monkeypatch):
  pkg = tmp_path / "cyc"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("g = 1\nfrom cyc.a import f\n")
  # A name (not a module) from the own package: needs cyc/__init__.py run.
  (pkg / "a.py").write_text("try:\n  from cyc import g\nexcept ImportError:"
                            "\n  pass\ndef f():\n  pass\n")
  (pkg / "b.py").write_text("from typing import TYPE_CHECKING\n"
                            "if TYPE_CHECKING:\n  from cyc import g\n"
                            "import cyc.a\n")
  monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
  modules = find_modules("cyc")
  edges = build_graph(include_deferred=False, modules=modules)
  assert ("cyc.b", "cyc") not in edges and ("cyc.b", "cyc.a") in edges
  assert strongly_connected_components(edges) == [["cyc", "cyc.a"]]
  assert describe_cycles(edges).splitlines()[1:] == [
      "  e.g. cyc -> cyc.a (cyc/__init__.py:2)",
      "       cyc.a -> cyc (cyc/a.py:2)"]


def test_no_import_time_cycles():
  cycles = describe_cycles(build_graph(include_deferred=False))
  assert not cycles, "import cycles among fedclf modules:\n" + cycles


def test_no_cycles_through_deferred_imports():
  cycles = describe_cycles(build_graph(include_deferred=True))
  assert not cycles, ("import cycles among fedclf modules through imports "
                      "inside functions:\n" + cycles)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
