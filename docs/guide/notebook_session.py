"""What a guide notebook's code cells call: run a chapter's step, show a
file it wrote.

A notebook works in its own folder (`runs/notebooks/full` or `.../small`
unless told otherwise), never in docs/guide/ or runs/guide/, so running a
notebook leaves the committed guide as it is. Steps run exactly as in
`python -m docs.guide.build` (`core.Step.build` with a `core.Context`),
finished ones are skipped, and the runs of one chapter are reused by the
later chapters that need them (chapters 7 and 8 reuse chapter 4's models),
as in the build.
"""

from __future__ import annotations

import os
import re
from typing import Callable, List

from docs.guide import core
from docs.guide.chapters import CHAPTERS

_IMAGE_LINE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)\s*$")


class Session:
  """One notebook's chapter, settings and work folder."""

  def __init__(self, chapter: int, small: bool, work_dir: str,
               echo: Callable[[str], None] = print):
    matches = [c for c in CHAPTERS if c.number == chapter]
    if not matches:
      raise core.GuideBuildError(f"the guide has no chapter {chapter}")
    self.chapter = matches[0]
    self.small = small
    root = os.path.join(work_dir, "small" if small else "full")
    self.paths = core.Paths(guide_dir=os.path.join(root, "guide"),
                            runs_dir=os.path.join(root, "runs"))
    self.echo = echo
    echo(f"chapter {chapter}, {'small' if small else 'full'} settings; "
         f"files under {root}")

  def run_step(self, name: str) -> None:
    """Runs the chapter's step `name` unless its outputs exist."""
    step = next((s for s in self.chapter.steps if s.name == name), None)
    if step is None:
      raise core.GuideBuildError(f"chapter {self.chapter.number} has no step "
                                 f"{name}")
    if step.done(self.paths) and not step.always:
      self.echo(f"{name}: up to date")
      return
    step.build(core.Context(self.paths, name, echo=self.echo,
                            small=self.small))
    missing = [o for o in step.outputs if not os.path.exists(
        os.path.join(self.paths.guide_dir, o))]
    if missing:
      raise core.GuideBuildError(f"step {name} did not write {missing[0]}")

  def path(self, rel: str) -> str:
    """A file the steps wrote (figures/, outputs/) or, for links such as
    ../../results/..., one relative to the guide's own folder."""
    own = os.path.join(self.paths.guide_dir, rel)
    return own if os.path.exists(own) else os.path.join(core.GUIDE_DIR, rel)

  def show(self, rel: str) -> None:
    """Displays a step's output: Markdown rendered (its images shown), text
    as printed, a PNG as an image."""
    # pylint: disable=g-import-not-at-top
    from IPython import display
    # pylint: enable=g-import-not-at-top
    path = self.path(rel)
    if rel.endswith(".png"):
      display.display(display.Image(filename=path))
    elif rel.endswith(".md"):
      for part in markdown_parts(core.read_text(path)):
        if part.startswith("!"):
          display.display(display.Image(filename=self.path(
              _IMAGE_LINE.match(part).group(2))))
        else:
          display.display(display.Markdown(part))
    else:
      print(core.read_text(path).rstrip())


def markdown_parts(text: str) -> List[str]:
  """`text` split at image lines: Markdown, image line, Markdown, ... (a
  notebook's Markdown output cannot load a local image by its path)."""
  parts, prose = [], []
  for line in text.splitlines():
    if _IMAGE_LINE.match(line.strip()):
      parts += ["\n".join(prose)] if "".join(prose).strip() else []
      parts.append(line.strip())
      prose = []
    else:
      prose.append(line)
  return parts + (["\n".join(prose)] if "".join(prose).strip() else [])
