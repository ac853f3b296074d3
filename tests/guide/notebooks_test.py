"""The guide's notebooks: generated from the chapters' sources and up to
date, valid nbformat v4 without outputs, running every step of their
chapter; small settings; execution with nbclient (one chapter here, all of
them in CI's `make notebooks`)."""

import json
import os
import re
import sys

import nbformat
import pytest

from docs.guide import core
from docs.guide import notebook_cells
from docs.guide import notebook_run
from docs.guide import notebook_session
from docs.guide.chapters import CHAPTERS
from fedclf.errors import UserError
from tests import binary_batch

# Executed here as the cheap check; `make notebooks` runs all chapters.
EXECUTED_CHAPTER = 3
_CALL = re.compile(r"^guide\.(run_step|show)\('([^']+)'\)$", re.MULTILINE)


def test_committed_notebooks_are_what_the_generator_writes():
  stale = notebook_cells.stale_notebooks(CHAPTERS)
  assert not stale, (f"out of date: {stale}; run "
                     f"`{notebook_cells.GENERATOR}`")
  assert sorted(os.listdir(notebook_cells.NOTEBOOK_DIR)) == sorted(
      f"{c.slug}.ipynb" for c in CHAPTERS)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.slug)
def test_notebook_is_valid_v4_without_outputs(chapter):
  notebook = nbformat.read(notebook_cells.notebook_path(chapter),
                           as_version=nbformat.NO_CONVERT)
  nbformat.validate(notebook)
  assert notebook.nbformat == 4
  assert notebook.metadata.kernelspec.name == notebook_run.KERNEL
  code = [c for c in notebook.cells if c.cell_type == "code"]
  assert all(not c.outputs and c.execution_count is None for c in code)
  assert f"chapter={chapter.number}," in code[0].source


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.slug)
def test_notebook_runs_each_step_once_before_showing_its_files(chapter):
  notebook = nbformat.read(notebook_cells.notebook_path(chapter),
                           as_version=4)
  calls = [m.groups() for c in notebook.cells if c.cell_type == "code"
           for m in _CALL.finditer(c.source)]
  ran = [name for kind, name in calls if kind == "run_step"]
  assert sorted(ran) == sorted(s.name for s in chapter.steps)
  producer = {o: s.name for s in chapter.steps for o in s.outputs}
  for k, (kind, rel) in enumerate(calls):
    if kind == "show":
      assert ("run_step", producer[rel]) in calls[:k], rel
  assert any(kind == "show" for kind, _ in calls)


def _tiny_chapter(tmp_path, template):
  guide = tmp_path / "guide"
  for folder in ("templates", "snippets", "outputs"):
    (guide / folder).mkdir(parents=True)
  (guide / "snippets" / "hello.py").write_text("print('hello')\n")
  (guide / "templates" / "01-x.md").write_text(template)
  step = core.Step("ch01.a", ("outputs/a.md", "figures/a.png"),
                   lambda ctx: None)
  return core.Chapter(1, "01-x", "X", (
      step, core.Step("ch01.b", ("outputs/b.txt",), lambda ctx: None))), guide


def test_template_becomes_prose_and_cells_that_run_then_show(tmp_path):
  chapter, guide = _tiny_chapter(tmp_path, (
      "# 1. X\n\nNext: [2. Y](02-y.md), [data](../../results/r.md), "
      "[tf](https://www.tensorflow.org/).\n\n{{ include outputs/a.md }}\n\n"
      "![a figure](figures/a.png)\n\nThe code:\n\n"
      "{{ code snippets/hello.py }}\n"))
  cells = notebook_cells.chapter_notebook(chapter, str(guide)).cells
  assert [c.cell_type for c in cells] == [
      "markdown", "code", "markdown", "code", "markdown", "code"]
  assert "Session(\n    chapter=1," in cells[1].source
  assert "[2. Y](02-y.ipynb)" in cells[2].source
  assert "[data](../../../results/r.md)" in cells[2].source
  assert "(https://www.tensorflow.org/)" in cells[2].source
  assert cells[3].source == ("guide.run_step('ch01.a')\n"
                             "guide.show('outputs/a.md')\n"
                             "guide.show('figures/a.png')")
  assert "The code:\n\n```python\nprint('hello')\n```" in cells[4].source
  # ch01.b's output is never shown: its step still runs, at the end.
  assert cells[-1].source == "guide.run_step('ch01.b')"


def test_a_file_no_step_writes_is_refused(tmp_path):
  chapter, guide = _tiny_chapter(tmp_path, "{{ text outputs/nobody.txt }}\n")
  with pytest.raises(UserError, match=r"01-x.md:1: no step .*nobody.txt"):
    notebook_cells.chapter_notebook(chapter, str(guide))


def test_small_settings_cap_commands_and_specs(tmp_path):
  args = ("--dataset=mnist", "--train_limit=1000", "--epochs=3",
          "--rounds=1", "--lr=0.003", "--plugin=epochs")
  assert core.small_args(args) == (
      "--dataset=mnist", "--train_limit=200", "--epochs=1", "--rounds=1",
      "--lr=0.003", "--plugin=epochs")
  spec = {"out_dir": "runs/guide/ch10/x", "common": {"epochs": 8},
          "search": {"trials": 6, "space": {"lr": [0.1]}},
          "runs": [{"rounds": 400, "stop_at_target": True}]}
  assert core.small_spec(spec, "elsewhere") == {
      "out_dir": "elsewhere", "common": {"epochs": 1},
      "search": {"trials": 2, "space": {"lr": [0.1]}},
      "runs": [{"rounds": 2, "stop_at_target": True}]}
  paths = core.Paths(guide_dir=str(tmp_path / "g"),
                     runs_dir=str(tmp_path / "runs"))
  command = core.Command("baselines.centralized", args)
  ctx = core.Context(paths, "ch01.a", small=True)
  assert ctx.sized(command).args == core.small_args(args)
  assert core.Context(paths, "ch01.a").sized(command) == command


def test_a_small_build_runs_a_capped_copy_of_a_spec(tmp_path):
  spec = tmp_path / "s.yaml"
  spec.write_text("out_dir: runs/guide/ch05/search\ncommon: {epochs: 8}\n")
  paths = core.Paths(guide_dir=str(tmp_path / "g"),
                     runs_dir=str(tmp_path / "runs"))
  # pylint: disable=protected-access
  out_dir = core.Context(paths, "ch05.s", small=True)._spec_to_run(
      str(spec), {"out_dir": "runs/guide/ch05/search", "common": {
          "epochs": 8}})
  assert out_dir == paths.run("ch05", "search")
  with open(f"{out_dir}.yaml") as f:
    assert json.load(f) == {"out_dir": out_dir, "common": {"epochs": 1}}
  default = core.Context(core.Paths(), "ch05.s")
  assert default._spec_to_run(str(spec), {"out_dir": "x"}) is None


def test_markdown_is_split_at_its_images():
  text = "# T\n\n| a |\n\n![curve](figures/c.png)\n\nafter\n"
  assert notebook_session.markdown_parts(text) == [
      "# T\n\n| a |\n", "![curve](figures/c.png)", "\nafter"]


def test_a_failing_cell_is_named_and_the_kernel_is_this_python(tmp_path):
  notebook = nbformat.v4.new_notebook(cells=[
      nbformat.v4.new_code_cell("import os, sys\nx = os.environ["
                                "'FEDCLF_GUIDE_SMALL']\n"
                                f"assert sys.executable == {sys.executable!r}"),
      nbformat.v4.new_code_cell("assert x == '0', x\n1 / 0")])
  path = tmp_path / "01-x.ipynb"
  nbformat.write(notebook, str(path))
  execution = notebook_run.Execution(small=False, work_dir=str(tmp_path),
                                     executed_dir=str(tmp_path / "done"))
  with pytest.raises(notebook_run.NotebookCellError,
                     match=r"01-x.ipynb cell 1 \(`assert x == '0', x`\): "
                           r"ZeroDivisionError"):
    notebook_run.execute(str(path), execution)
  executed = nbformat.read(str(tmp_path / "done" / "01-x.ipynb"), 4)
  assert executed.cells[1].outputs[0]["ename"] == "ZeroDivisionError"


def test_one_chapter_executes_at_small_settings(tmp_path):
  chapter = [c for c in CHAPTERS if c.number == EXECUTED_CHAPTER][0]
  execution = notebook_run.Execution(small=True, work_dir=str(tmp_path),
                                     executed_dir=str(tmp_path / "done"))
  notebook_run.execute(notebook_cells.notebook_path(chapter), execution)
  guide = tmp_path / "small" / "guide"
  for step in chapter.steps:
    assert all((guide / o).exists() for o in step.outputs), step.name
  executed = nbformat.read(str(tmp_path / "done" / f"{chapter.slug}.ipynb"),
                           4)
  images = [o for c in executed.cells if c.cell_type == "code"
            for o in c.outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 4


def test_binaries_check_write_and_refuse(tmp_path):
  folder = f"--notebook_dir={tmp_path}"
  check, stale, write, fresh = binary_batch.run_commands(
      "docs.guide.write_notebooks",
      [["--check"], ["--check", folder], [folder], ["--check", folder]])
  assert check.returncode == 0 and "all 10 notebooks up to date" in (
      check.stdout)
  binary_batch.assert_one_error_line(stale, "10 notebook(s) out of date")
  assert "run `python -m docs.guide.write_notebooks`" in stale.stderr
  assert write.returncode == 0 and "rewrote 10 of 10" in write.stdout
  assert fresh.returncode == 0 and len(os.listdir(tmp_path)) == 10
  unknown, = binary_batch.run_commands("docs.guide.run_notebooks",
                                       [["--chapter=11"]])
  binary_batch.assert_one_error_line(unknown, "unknown chapter '11'")
