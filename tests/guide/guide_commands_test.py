"""The guide cannot drift from the code: every command it quotes parses with
the binary's own flags, every Python block's imports resolve, and the
committed chapters are what their templates render to."""

import glob
import json
import os
import subprocess
import sys

import pytest

from docs.guide import commands
from docs.guide import core
from docs.guide.chapters import CHAPTERS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
GUIDE = os.path.join(ROOT, "docs", "guide")

# Deliberately wrong commands, checked in the same subprocess as the guide's
# own: each must be reported, with this text in its error.
BAD = {
    "python -m baselines.centralized --no_such_flag=1": "no_such_flag",
    "python -m baselines.centralized --model=vgg99": "vgg99",
    "python -m simulations.federated --rounds=many": "rounds",
    "python -m simulations.federated --backend=spark": "spark",
    "python -m simulations.nope --x=1": "no module",
    "python -m simulations.ssl_pretrain --method=dann": "dann",
}


def _guide_quotes():
  quoted, blocks = [], []
  for page in commands.guide_pages(GUIDE):
    with open(page) as f:
      c, b = commands.extract(f.read(), os.path.relpath(page, ROOT))
    quoted += c
    blocks += b
  return quoted, blocks


def test_extract_joins_continuations_and_reads_env():
  markdown = "\n".join([
      "Run `python -m simulations.tables --runs=x` then:", "",
      "```bash", "# a comment",
      "PYTHONPATH=examples/p python -m simulations.federated \\",
      "    --rounds=3 --out_dir=runs/x", "make guide", "```", "",
      "```python", "from fedclf.data import load_dataset", "```",
      "```text", "python -m not.a.command --in_output", "```"])
  quoted, blocks = commands.extract(markdown, "page.md")
  assert [(q.module or q.program, q.args) for q in quoted] == [
      ("simulations.tables", ("--runs=x",)),
      ("simulations.federated", ("--rounds=3", "--out_dir=runs/x")),
      ("make", ("guide",))]
  assert quoted[1].env == (("PYTHONPATH", "examples/p"),)
  assert quoted[1].source == "page.md:5"
  assert blocks == [("page.md:10", "from fedclf.data import load_dataset")]


def test_unknown_programs_targets_and_snippets_fail_without_python():
  quoted, _ = commands.extract("\n".join([
      "```bash", "rm -rf /", "make no_such_target",
      "python -m docs.guide.snippets.missing", "pip install -e nowhere",
      "docker run tensorflow/serving", "```"]), "page.md")
  left, errors = commands.check_without_python(quoted, ROOT)
  assert left == []
  assert len(errors) == 4, errors
  assert "unknown program 'rm'" in errors[0]


def _committed_grid_specs():
  """Every experiment grid under experiments/ (comparison specs, which name
  no binary, excepted): a paper table's grid runs for hours, so a misspelt
  flag must fail here, not when the grid reaches that run."""
  for path in sorted(glob.glob(os.path.join(ROOT, "experiments", "*.yaml"))):
    with open(path) as f:
      if any(line.startswith("binary:") for line in f):
        yield os.path.relpath(path, ROOT)


def _reproduce(spec_path: str, source: str):
  return commands.extract(
      f"`python -m simulations.reproduce --spec={spec_path}`", source)[0][0]


def test_every_quoted_command_and_committed_spec_parses(tmp_path):
  quoted, blocks = _guide_quotes()
  modules = {q.module for q in quoted if q.module}
  # The guide quotes all of these; finding fewer means extraction broke.
  assert {"baselines.centralized", "simulations.federated",
          "simulations.reproduce", "simulations.ssl_pretrain",
          "simulations.domain_adaptation"} <= modules
  specs = list(_committed_grid_specs())
  assert "experiments/niid_bench_extended.yaml" in specs and len(specs) >= 20
  in_guide = {w for q in quoted for w in q.words if w.startswith("--spec=")}
  quoted += [_reproduce(path, path) for path in specs
             if f"--spec={path}" not in in_guide]
  left, errors = commands.check_without_python(quoted, ROOT)
  bad = [commands.extract(f"`{text}`", "BAD")[0][0] for text in BAD]
  # A spec with a misspelt flag and one with a choice the flag lacks.
  bad_specs = {"client_size: dirichlet": "client_size",
               "client_sizes: zipf": "zipf"}
  for i, line in enumerate(bad_specs):
    (tmp_path / f"bad{i}.yaml").write_text(
        "binary: simulations.federated\nout_dir: x\nruns:\n"
        f"  - {{name: a, partition: quantity_skew, {line}}}\n")
    bad.append(_reproduce(str(tmp_path / f"bad{i}.yaml"), "BAD"))
  request = {"commands": commands.flagcheck_jobs(left + bad),
             "python_blocks": blocks}
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, "-m", "docs.guide.flagcheck"],
                        input=json.dumps(request), cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  failures = json.loads(proc.stdout)
  expected = [f for f in failures if f["source"] == "BAD:1"]
  for text, message in BAD.items():
    reported = [f for f in expected if f["text"] == text]
    assert reported and message in reported[0]["error"], (text, reported)
  for i, message in enumerate(bad_specs.values()):
    reported = [f for f in expected if f"bad{i}.yaml" in f["text"]]
    assert reported and message in reported[0]["error"], (i, reported)
  errors += [f"{f['source']}: {f['text']}: {f['error']}" for f in failures
             if f["source"] != "BAD:1"]
  assert not errors, "\n".join(errors)


def test_chapters_are_rendered_from_their_templates():
  pages = [c.page for c in CHAPTERS]
  assert pages == sorted(pages) and len(pages) == 10
  for chapter in CHAPTERS:
    with open(os.path.join(GUIDE, chapter.template)) as f:
      expected = core.render(f.read(), GUIDE, chapter.template)
    with open(os.path.join(GUIDE, chapter.page)) as f:
      assert f.read() == expected, (
          f"{chapter.page} is stale: run python -m docs.guide.build "
          f"--render_only")


@pytest.mark.parametrize("bad,message", [
    ("{{ include outputs/no_such_file.md }}", "does not exist"),
    ("{{ nonsense outputs/x.md }}", "unknown directive"),
    ("![missing](figures/no_such.png)", "image figures/no_such.png"),
])
def test_render_refuses_placeholders(bad, message):
  with pytest.raises(Exception, match=message):
    core.render(f"# title\n\n{bad}\n", GUIDE, "t.md")


def test_figures_stay_small():
  figures = os.path.join(GUIDE, "figures")
  sizes = {f: os.path.getsize(os.path.join(figures, f))
           for f in os.listdir(figures)}
  assert sizes and max(sizes.values()) <= 150_000, sorted(
      sizes.items(), key=lambda kv: -kv[1])[:3]
