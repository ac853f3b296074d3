r"""Executes the guide's notebooks (`make notebooks`), by default at small
settings in a fresh temporary folder, so neither docs/guide/ nor
runs/guide/ changes.

  python -m docs.guide.run_notebooks                  # all, small settings
  python -m docs.guide.run_notebooks --chapter=1,4 --work_dir=/tmp/nb
  python -m docs.guide.run_notebooks --nosmall --work_dir=runs/notebooks

Prints each chapter's wall and CPU time (kernel and the binaries it ran); the executed notebooks, outputs included,
are saved under <work_dir>/executed/ (a temporary folder is removed after
a success). A failing cell stops the run with exit status 2 and one line
naming the notebook and the cell.
"""

import shutil
import tempfile

from absl import flags

from fedclf import cli

cli.define_common_flags()
flags.DEFINE_list("chapter", [], "Chapter numbers (default: all, in order).")
flags.DEFINE_bool("small", True,
                  "Small settings (docs.guide.core.SMALL_CAPS); --nosmall "
                  "runs the chapters' own, as `make guide` does.")
flags.DEFINE_string("work_dir", "",
                    "Where the notebooks' runs, outputs and executed copies "
                    "go (default: a new temporary folder).")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  import os
  import time
  from docs.guide import core
  from docs.guide import notebook_cells
  from docs.guide import notebook_run
  from docs.guide.chapters import select
  # pylint: enable=g-import-not-at-top
  chapters = select(FLAGS.chapter)
  work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="fedclf_notebooks_")
  execution = notebook_run.Execution(
      small=FLAGS.small, work_dir=work_dir,
      executed_dir=os.path.join(work_dir, "executed"))
  print(f"notebooks' files under {work_dir}", flush=True)
  start, cpu_start = time.time(), core.cpu_seconds()
  for chapter in chapters:
    cpu = core.cpu_seconds()
    seconds = notebook_run.execute(notebook_cells.notebook_path(chapter),
                                   execution)
    # The kernel and the binaries it started have ended: their CPU counts.
    print(f"chapter {chapter.number:2d} {chapter.slug}: {seconds:6.1f} s "
          f"wall, {core.cpu_seconds() - cpu:6.1f} s CPU", flush=True)
  print(f"total: {time.time() - start:.1f} s wall, "
        f"{core.cpu_seconds() - cpu_start:.1f} s CPU")
  if not FLAGS.work_dir:  # a failure keeps the folder, for its logs
    shutil.rmtree(work_dir)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
