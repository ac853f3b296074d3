"""The guide's build machinery: steps, runs of fedclf binaries, rendering.

A chapter is a list of `Step`s. A step declares the files it writes under
the guide folder (figures/*.png, outputs/*.md|json|txt) and is skipped when
they all exist, so an interrupted build resumes where it stopped; `--force`
reruns it from scratch, including the binary runs it owns. Runs go to
`runs/guide/` (git-ignored), the same folders the chapters' commands name,
so a reader who types a chapter's commands gets the same files.

Templates (`templates/NN-*.md`) become chapters (`NN-*.md`) with three
directives, each alone on its line:

    {{ include outputs/ch04_zoo.md }}      the file's Markdown, verbatim
    {{ code snippets/tf_data.py }}         a fenced Python block
    {{ text outputs/ch02_tf_data.txt }}    a fenced text block (printed output)

Rendering fails on a missing file or an image link to a missing figure, so
a chapter never ships a placeholder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from fedclf.errors import UserError
from fedclf.results import run_folder
from fedclf.results.record import atomic_output
from fedclf.results.record import atomic_write_json
from fedclf.results.record import atomic_write_text

GUIDE_DIR = os.path.dirname(os.path.abspath(__file__))
# Relative to the repository root, where the build and the reader run.
RUNS_DIR = os.path.join("runs", "guide")
FIGURE_DPI = 90
# Lines of a displayed command wrap here (Markdown code blocks scroll badly).
COMMAND_WIDTH = 78


class GuideBuildError(UserError):
  """A step failed; the message names the step and where its log is."""


@dataclasses.dataclass(frozen=True)
class Paths:
  """Where the build reads and writes.

  guide_dir: templates in, chapters, figures/ and outputs/ out.
  runs_dir: the run folders of the binaries (scratch, git-ignored).
  results_dir: the project's committed results (chapter 9 embeds them).
  """
  guide_dir: str = GUIDE_DIR
  runs_dir: str = RUNS_DIR
  results_dir: str = "results"

  def figure(self, name: str) -> str:
    return os.path.join(self.guide_dir, "figures", name)

  def output(self, name: str) -> str:
    return os.path.join(self.guide_dir, "outputs", name)

  def run(self, *parts: str) -> str:
    return os.path.join(self.runs_dir, *parts)


@dataclasses.dataclass(frozen=True)
class Command:
  """One command line of the guide: `python -m <module> <args...>`."""
  module: str
  args: Tuple[str, ...]
  env: Tuple[Tuple[str, str], ...] = ()  # shown as VAR=value prefixes

  def argv(self, python: str = sys.executable) -> List[str]:
    return [python, "-m", self.module, *self.args]

  def display(self) -> str:
    """The command as a reader types it, wrapped with backslashes."""
    words = [f"{k}={shlex.quote(v)}" for k, v in self.env]
    words += ["python", "-m", self.module] + [shlex.quote(a) for a in self.args]
    lines, line = [], ""
    for word in words:
      if line and len(line) + 1 + len(word) > COMMAND_WIDTH - 2:
        lines.append(line + " \\")
        line = "    " + word
      else:
        line = f"{line} {word}" if line else word
    lines.append(line)
    return "\n".join(lines)

  def out_dir(self) -> Optional[str]:
    return self._flag("out_dir")

  def results_dir(self) -> Optional[str]:
    """The folder the binary claims and writes summary.json to: --out_dir,
    or for an export, which collects one folder per model in --out_dir,
    <out_dir>/<model_name>."""
    out_dir = self.out_dir()
    model_name = self._flag("model_name")
    if out_dir and self.module == "fedclf.export" and model_name:
      return os.path.join(out_dir, model_name)
    return out_dir

  def _flag(self, name: str) -> Optional[str]:
    for arg in self.args:
      if arg.startswith(f"--{name}="):
        return arg.split("=", 1)[1]
    return None


# A small build (the notebooks executed in CI, a quick look) runs every
# command and spec with these integer settings capped: the same steps, code
# paths and outputs in a fraction of the time. The chapters keep showing the
# full settings.
SMALL_CAPS: Dict[str, int] = {
    "train_limit": 200, "test_limit": 200, "target_train_limit": 200,
    "epochs": 1, "warmup_epochs": 0, "centralized_epochs": 1,
    "probe_epochs": 1, "finetune_epochs": 1, "rounds": 2, "local_epochs": 1,
    "trials": 2, "embedding_points": 100, "tfjs_examples": 16,
}


def small_args(args: Sequence[str]) -> Tuple[str, ...]:
  """`args` with every --flag=N of SMALL_CAPS lowered to its cap."""
  out = []
  for arg in args:
    name, _, value = arg[2:].partition("=")
    if arg.startswith("--") and name in SMALL_CAPS and value.isdigit():
      arg = f"--{name}={min(int(value), SMALL_CAPS[name])}"
    out.append(arg)
  return tuple(out)


def small_spec(spec, out_dir: str):
  """A parsed spec with out_dir replaced and, at any depth, every integer
  setting of SMALL_CAPS lowered to its cap."""
  def shrink(node):
    if isinstance(node, dict):
      return {k: (min(v, SMALL_CAPS[k]) if k in SMALL_CAPS and
                  isinstance(v, int) and not isinstance(v, bool)
                  else shrink(v)) for k, v in node.items()}
    if isinstance(node, list):
      return [shrink(v) for v in node]
    return node
  return dict(shrink(spec), out_dir=out_dir)


def _continue_flags(out_dir: str) -> List[str]:
  """How a rerun treats a run folder left unfinished: resumed from its
  checkpoints, or, stopped before the first one, moved aside and rerun
  (the binaries refuse a used folder without one of the two)."""
  if run_folder.has_checkpoints(out_dir):
    return ["--resume"]
  return ["--overwrite"] if run_folder.existing_run(out_dir) else []


def bash_block(commands: Sequence[Command]) -> str:
  return "```bash\n" + "\n".join(c.display() for c in commands) + "\n```\n"


class Context:
  """What a step's build function gets: paths and a way to run binaries."""

  def __init__(self, paths: Paths, step_name: str, python: str = sys.executable,
               echo: Callable[[str], None] = print, small: bool = False):
    self.paths = paths
    self.step_name = step_name
    self.python = python
    self.echo = echo
    self.small = small  # run with SMALL_CAPS (see small_args)

  def sized(self, command: Command) -> Command:
    """The command this context runs for `command`: itself, or in a small
    build, with its settings capped."""
    if not self.small:
      return command
    return dataclasses.replace(command, args=small_args(command.args))

  def data_limit(self, limit: int) -> int:
    """The slice of a dataset (0 = all) a step that loads one itself uses:
    `limit`, capped like --train_limit in a small build."""
    cap = SMALL_CAPS["train_limit"]
    return min(limit or cap, cap) if self.small else limit

  def figure(self, name: str) -> str:
    return self.paths.figure(name)

  def output(self, name: str) -> str:
    return self.paths.output(name)

  def write_output(self, name: str, text: str) -> None:
    atomic_write_text(self.output(name), text)

  def write_json(self, name: str, obj) -> None:
    atomic_write_json(self.output(name), obj)

  def _log_path(self, command: Command, suffix: str) -> str:
    """runs/guide/logs/<out_dir or module>-<hash of the arguments>.suffix:
    two commands writing to one out_dir (exports) keep separate logs."""
    target = command.out_dir() or command.module
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_",
                  os.path.relpath(target, self.paths.runs_dir)
                  if command.out_dir() else target)
    digest = hashlib.sha1(" ".join(command.args).encode()).hexdigest()[:6]
    return self.paths.run("logs", f"{name}-{digest}.{suffix}")

  def _subprocess(self, argv: List[str], env: Dict[str, str], log_path: str,
                  timeout: float, capture: bool = False,
                  stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    """Runs argv with its stderr (and, unless captured, its stdout) going to
    `log_path` as it runs; a failure raises GuideBuildError with the last
    line of the log."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    start = time.time()
    with open(log_path, "w") as log:
      log.write(f"$ {' '.join(shlex.quote(a) for a in argv)}\n")
      log.flush()
      try:
        proc = subprocess.run(
            argv, env=env, input=stdin, text=True, timeout=timeout,
            stdout=subprocess.PIPE if capture else log,
            stderr=log if capture else subprocess.STDOUT, check=False)
      except subprocess.TimeoutExpired:
        raise GuideBuildError(f"step {self.step_name}: {' '.join(argv[1:4])}"
                              f" ran over {timeout:.0f} s; log: "
                              f"{log_path}") from None
      if capture:
        log.write(f"\n# stdout\n{proc.stdout}")
      log.write(f"\n# exit {proc.returncode}, {time.time() - start:.1f} s\n")
    if proc.returncode != 0:
      lines = [l for l in read_text(log_path).splitlines()
               if l.strip() and not l.startswith("# ")]
      raise GuideBuildError(f"step {self.step_name}: {' '.join(argv[1:4])} "
                            f"failed (exit {proc.returncode}): "
                            f"{(lines or ['(no output)'])[-1][:300]}; log: "
                            f"{log_path}")
    return proc

  def run(self, command: Command, timeout: float = 3600) -> str:
    """Runs `command` from the repository root and returns its stdout.

    A run whose out_dir already holds summary.json is finished and is not
    run again (its stdout from then is returned); one with checkpoints is
    resumed, as `simulations.reproduce` does. stdout and stderr are kept in
    runs/guide/logs/.
    """
    command = self.sized(command)
    out_dir = command.results_dir()
    argv = command.argv(self.python)
    stdout_path = self._log_path(command, "stdout")
    if out_dir and os.path.exists(os.path.join(out_dir, "summary.json")):
      self.echo(f"  [done] {out_dir}")
      return read_text(stdout_path)
    if out_dir:
      argv += _continue_flags(out_dir)
    env = dict(os.environ, **dict(command.env))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log_path = self._log_path(command, "log")
    self.echo(f"  $ python {' '.join(shlex.quote(a) for a in argv[1:])}")
    proc = self._subprocess(argv, env, log_path, timeout, capture=True)
    atomic_write_text(stdout_path, proc.stdout)
    return proc.stdout

  def run_shown(self, command: Command, name: str) -> Dict:
    """Runs a binary command the chapter shows with its printed output:
    writes outputs/{name}_command.md and outputs/{name}_output.txt and
    returns the run's summary.json."""
    printed = self.run_all([command])[0]
    self.write_output(f"{name}_command.md", bash_block([command]))
    self.write_output(f"{name}_output.txt", printed.strip())
    return read_json(os.path.join(command.out_dir(), "summary.json"))

  def run_spec(self, spec_path: str, name: str) -> str:
    """Runs `simulations.reproduce` on a spec (finished runs are skipped by
    reproduce itself); writes outputs/{name}_spec.md (the YAML) and
    outputs/{name}_command.md and returns the spec's out_dir."""
    import yaml  # pylint: disable=g-import-not-at-top
    command = Command("simulations.reproduce", (f"--spec={spec_path}",))
    text = read_text(spec_path)
    out_dir = self._spec_to_run(spec_path, yaml.safe_load(text))
    self.run(Command(command.module, (f"--spec={out_dir}.yaml",))
             if out_dir else command)
    self.write_output(f"{name}_spec.md", f"```yaml\n{text}```\n")
    self.write_output(f"{name}_command.md", bash_block([command]))
    return out_dir or str(yaml.safe_load(text)["out_dir"])

  def _spec_to_run(self, spec_path: str, spec: Dict) -> Optional[str]:
    """None when the spec runs as written; else the out_dir of the copy
    written to <out_dir>.yaml, which runs under this build's runs folder
    (a spec names runs/guide/...) and, in a small build, capped."""
    rel = os.path.relpath(str(spec["out_dir"]), RUNS_DIR)
    if self.paths.runs_dir == RUNS_DIR and not self.small:
      return None
    out_dir = self.paths.run(rel if not rel.startswith("..") else
                             os.path.basename(spec_path))
    spec = small_spec(spec, out_dir) if self.small else dict(spec,
                                                             out_dir=out_dir)
    atomic_write_json(f"{out_dir}.yaml", spec)  # JSON is YAML
    return out_dir

  def run_all(self, commands: Sequence[Command],
              timeout: float = 7200) -> List[str]:
    """Runs fedclf binary commands like `run` (finished ones skipped,
    interrupted ones resumed) and returns their stdouts, but runs the
    commands of one binary in one process (`docs.guide.runner`), which pays
    TensorFlow's start-up once instead of once per command."""
    commands = [self.sized(c) for c in commands]
    jobs: Dict[str, List[Dict]] = {}
    for command in commands:
      out_dir = command.results_dir()
      if not out_dir or command.env:
        raise ValueError(f"run_all needs --out_dir and no environment: "
                         f"{command.display()}")
      if os.path.exists(os.path.join(out_dir, "summary.json")):
        self.echo(f"  [done] {out_dir}")
        continue
      args = list(command.args)
      args += _continue_flags(out_dir)
      jobs.setdefault(command.module, []).append(
          {"args": args, "stdout": self._log_path(command, "stdout")})
    for module, module_jobs in jobs.items():
      log_path = self.paths.run("logs", f"{self.step_name}.{module}.log")
      for job in module_jobs:
        self.echo(f"  $ python -m {module} {' '.join(job['args'])}")
      env = dict(os.environ)
      env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
      argv = [self.python, "-m", "docs.guide.runner", module]
      self._subprocess(argv, env, log_path, timeout,
                       stdin=json.dumps(module_jobs))
    return [read_text(self._log_path(c, "stdout")) for c in commands]


@dataclasses.dataclass(frozen=True)
class Step:
  """A unit of the build.

  name: "chNN.what", unique across the guide.
  outputs: files it writes, relative to the guide folder; all present means
    done.
  build: writes the outputs.
  run_dirs: run folders (relative to the runs folder) it owns; --force
    clears them so the runs are redone.
  always: rebuilt by every build (cheap steps that read inputs which change
    outside the guide, e.g. results/).
  """
  name: str
  outputs: Tuple[str, ...]
  build: Callable[[Context], None]
  run_dirs: Tuple[str, ...] = ()
  always: bool = False

  def done(self, paths: Paths) -> bool:
    return all(os.path.exists(os.path.join(paths.guide_dir, o))
               for o in self.outputs)


@dataclasses.dataclass(frozen=True)
class Chapter:
  number: int
  slug: str  # file name without .md, e.g. "04-architectures"
  title: str
  steps: Tuple[Step, ...]

  @property
  def template(self) -> str:
    return os.path.join("templates", f"{self.slug}.md")

  @property
  def page(self) -> str:
    return f"{self.slug}.md"


# -- rendering --------------------------------------------------------------

DIRECTIVE = re.compile(r"^\{\{\s*(include|code|text)\s+(\S+)\s*\}\}\s*$")
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
_GENERATED_NOTE = ("<!-- Generated by `python -m docs.guide.build` from "
                   "{template}; edit the template, not this file. -->\n")


def render(template_text: str, guide_dir: str, template_name: str) -> str:
  """Fills the directives of a template; every referenced file must exist."""
  out = [_GENERATED_NOTE.format(template=template_name)]
  for number, line in enumerate(template_text.splitlines(), start=1):
    match = DIRECTIVE.match(line.strip())
    if not match and line.strip().startswith("{{"):
      raise UserError(f"{template_name}:{number}: unknown directive {line!r}; "
                      f"use include, code or text")
    if not match:
      out.append(line)
      continue
    kind, rel = match.groups()
    path = os.path.join(guide_dir, rel)
    if not os.path.exists(path):
      raise UserError(f"{template_name}:{number}: {rel} does not exist (run "
                      f"its chapter's build steps first)")
    with open(path) as f:
      content = f.read().rstrip("\n")
    if kind == "include":
      out.append(content)
    else:
      language = "python" if kind == "code" else "text"
      out += [f"```{language}", content, "```"]
  text = "\n".join(out) + "\n"
  for link in _IMAGE.findall(text):
    if "://" in link:
      continue
    if not os.path.exists(os.path.join(guide_dir, link)):
      raise UserError(f"{template_name}: image {link} does not exist")
  return text


def render_chapter(chapter: Chapter, guide_dir: str) -> str:
  with open(os.path.join(guide_dir, chapter.template)) as f:
    text = render(f.read(), guide_dir, chapter.template)
  path = os.path.join(guide_dir, chapter.page)
  atomic_write_text(path, text)
  return path


# -- figures ----------------------------------------------------------------

def new_figure(width: float, height: float):
  """A matplotlib Figure without pyplot (no global state)."""
  # pylint: disable=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(width, height))
  FigureCanvasAgg(fig)
  return fig


def save_figure(fig, path: str, dpi: int = FIGURE_DPI) -> None:
  fig.tight_layout()
  with atomic_output(path) as tmp:
    fig.savefig(tmp, format="png", dpi=dpi)


def image_grid(fig, images, titles: Sequence[str], rows: int, cols: int,
               first: int = 1, cmap: str = "gray") -> None:
  """Draws images ([N,H,W,C] in [0,1]) into a rows x cols block of `fig`."""
  for i, (image, title) in enumerate(zip(images, titles)):
    ax = fig.add_subplot(rows, cols, first + i)
    # Nearest neighbour shows the real pixels (and compresses far better).
    if image.shape[-1] == 1:
      ax.imshow(image[..., 0], cmap=cmap, vmin=0.0, vmax=1.0,
                interpolation="nearest")
    else:
      ax.imshow(image.clip(0.0, 1.0), interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def copy_figure(source: str, path: str, max_bytes: int = 140_000) -> None:
  """Copies a PNG a binary wrote into the guide, small enough to commit:
  a 128-colour palette (heat maps compress badly in full colour), scaled
  down in steps until the file takes at most `max_bytes`."""
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(source) as image:
    image = image.convert("RGB")
  for width in (1000, 900, 800, 700, 600, 500):
    scaled = image
    if image.width > width:
      scaled = image.resize(
          (width, round(image.height * width / image.width)), Image.LANCZOS)
    encoded = io.BytesIO()
    scaled.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(
        encoded, format="PNG", optimize=True)
    if encoded.tell() <= max_bytes:
      break
  with atomic_output(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(encoded.getvalue())


# -- tables -----------------------------------------------------------------

def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def demote_headings(markdown: str, levels: int = 3) -> str:
  """Pushes every heading down `levels` levels (a results README's "# Title"
  becomes a sub-section of a chapter)."""
  return re.sub(r"^(#+) ", lambda m: "#" * min(6, len(m.group(1)) + levels) +
                " ", markdown, flags=re.MULTILINE)


def read_text(path: str) -> str:
  """The file's text, or "" when it does not exist."""
  if not os.path.exists(path):
    return ""
  with open(path) as f:
    return f.read()


def read_json(path: str) -> Dict:
  with open(path) as f:
    return json.load(f)


def read_metrics(run_dir: str) -> List[Dict]:
  """Rows of a run's metrics.jsonl."""
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


# -- the build --------------------------------------------------------------

TIMES_FILE = "build_times.json"


def cpu_seconds() -> float:
  """CPU time of this process and its finished children so far: unlike
  wall time, it hardly depends on what else the machine is running."""
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _load_average() -> float:
  try:
    return round(os.getloadavg()[0], 2)
  except OSError:
    return -1.0


def clear_runs(paths: Paths, step: Step) -> None:
  for rel in step.run_dirs:
    path = paths.run(rel)
    if os.path.isdir(path):
      shutil.rmtree(path)


def build(chapters: Sequence[Chapter], paths: Paths, force: bool = False,
          python: str = sys.executable, echo: Callable[[str], None] = print,
          small: bool = False) -> Dict[str, Dict]:
  """Runs the steps of `chapters` (skipping finished ones unless `force`),
  renders each chapter and returns this build's {step: timing}.

  Step timings (wall seconds, the 1-minute load average before and after)
  accumulate in outputs/build_times.json, so the index can state what a
  full build took even when it ran in several sittings.
  """
  times_path = paths.output(TIMES_FILE)
  times = read_json(times_path) if os.path.exists(times_path) else {}
  ran: Dict[str, Dict] = {}
  for chapter in chapters:
    echo(f"chapter {chapter.number}: {chapter.title}")
    for step in chapter.steps:
      if step.done(paths) and not force and not step.always:
        echo(f"  {step.name}: up to date")
        continue
      if force:
        clear_runs(paths, step)
      echo(f"  {step.name}: building")
      load_before = _load_average()
      start, cpu_start = time.time(), cpu_seconds()
      step.build(Context(paths, step.name, python, echo, small))
      missing = [o for o in step.outputs
                 if not os.path.exists(os.path.join(paths.guide_dir, o))]
      if missing:
        raise GuideBuildError(f"step {step.name} did not write {missing[0]}")
      ran[step.name] = {"chapter": chapter.number,
                        "seconds": round(time.time() - start, 1),
                        "cpu_seconds": round(cpu_seconds() - cpu_start, 1),
                        "load_before": load_before,
                        "load_after": _load_average(),
                        "cpu_count": os.cpu_count(),
                        "finished": time.strftime("%Y-%m-%d %H:%M")}
      times[step.name] = ran[step.name]
      atomic_write_json(times_path, times)
      echo(f"  {step.name}: {ran[step.name]['seconds']} s")
    echo(f"  wrote {render_chapter(chapter, paths.guide_dir)}")
  return ran


def times_markdown(times: Dict[str, Dict],
                   chapters: Sequence[Chapter]) -> str:
  """Per-chapter wall and CPU time of the last run of each step, with the
  load the machine was under (the build shares it with whatever else runs).
  """
  rows = []
  total, total_cpu = 0.0, 0.0
  loads, cores = [], set()
  for chapter in chapters:
    timed = [times[s.name] for s in chapter.steps if s.name in times]
    if not timed:
      continue
    seconds = sum(t["seconds"] for t in timed)
    cpu = sum(t.get("cpu_seconds", 0.0) for t in timed)
    total += seconds
    total_cpu += cpu
    loads += [l for t in timed for l in (t["load_before"], t["load_after"])
              if l >= 0]
    cores.update(t["cpu_count"] for t in timed)
    rows.append([f"{chapter.number}. {chapter.title}", f"{seconds / 60:.1f}",
                 f"{cpu / 60:.1f}"])
  rows.append(["**total**", f"**{total / 60:.1f}**",
               f"**{total_cpu / 60:.1f}**"])
  note = ""
  if loads:
    note = (f"\nLoad average (1 minute) at step boundaries: {min(loads):.1f} "
            f"to {max(loads):.1f}, on {', '.join(map(str, sorted(cores)))} "
            f"cores.\n")
  return markdown_table(["chapter", "wall minutes", "CPU minutes"],
                        rows) + note


def render_index(chapters: Sequence[Chapter], paths: Paths) -> str:
  """outputs/build_times.md from the recorded timings, then README.md."""
  times_path = paths.output(TIMES_FILE)
  times = read_json(times_path) if os.path.exists(times_path) else {}
  atomic_write_text(paths.output("build_times.md"),
                    times_markdown(times, chapters))
  with open(os.path.join(paths.guide_dir, "templates", "README.md")) as f:
    text = render(f.read(), paths.guide_dir, "templates/README.md")
  path = os.path.join(paths.guide_dir, "README.md")
  atomic_write_text(path, text)
  return path
