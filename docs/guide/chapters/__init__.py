"""The guide's chapters, in reading order."""

from typing import Sequence, Tuple

from docs.guide.chapters import ch01_datasets
from docs.guide.chapters import ch02_tensorflow
from docs.guide.chapters import ch03_preprocessing
from docs.guide.chapters import ch04_architectures
from docs.guide.chapters import ch05_training
from docs.guide.chapters import ch06_evaluation
from docs.guide.chapters import ch07_interpretation
from docs.guide.chapters import ch08_deployment
from docs.guide.chapters import ch09_advanced
from docs.guide.chapters import ch10_next
from docs.guide.core import Chapter
from fedclf.errors import UserError

CHAPTERS: Tuple[Chapter, ...] = tuple(
    m.CHAPTER for m in (ch01_datasets, ch02_tensorflow, ch03_preprocessing,
                        ch04_architectures, ch05_training, ch06_evaluation,
                        ch07_interpretation, ch08_deployment, ch09_advanced,
                        ch10_next))


def select(numbers: Sequence[str]) -> Tuple[Chapter, ...]:
  """The chapters named by number (all when empty), in reading order."""
  if not numbers:
    return CHAPTERS
  known = {str(c.number): c for c in CHAPTERS}
  unknown = [n for n in numbers if n.strip() not in known]
  if unknown:
    raise UserError(f"unknown chapter {unknown[0]!r}; choose from "
                    f"{', '.join(known)}")
  wanted = {n.strip() for n in numbers}
  return tuple(c for c in CHAPTERS if str(c.number) in wanted)
