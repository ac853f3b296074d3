r"""Writes the guide's chapters as notebooks (docs/guide/notebooks/).

  python -m docs.guide.write_notebooks           # rewrite the stale ones
  python -m docs.guide.write_notebooks --check   # exit 2 if any is stale

Each notebook is generated from the chapter's template and step list
(`docs.guide.notebook_cells`), without outputs; run this after editing a
template or a chapter's steps.
"""

import os

from absl import flags

from fedclf import cli

cli.define_common_flags()
flags.DEFINE_bool("check", False,
                  "Write nothing; exit 2 naming the notebooks that differ "
                  "from what would be written.")
flags.DEFINE_string("notebook_dir", "",
                    "Where the notebooks are (default: docs/guide/"
                    "notebooks/).")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from docs.guide import notebook_cells
  from docs.guide.chapters import CHAPTERS
  from fedclf.errors import UserError
  # pylint: enable=g-import-not-at-top
  stale = notebook_cells.stale_notebooks(
      CHAPTERS, notebook_dir=FLAGS.notebook_dir or notebook_cells.NOTEBOOK_DIR,
      write=not FLAGS.check)
  if FLAGS.check and stale:
    raise UserError(f"{len(stale)} notebook(s) out of date, first "
                    f"{os.path.relpath(stale[0])}: run `{notebook_cells.GENERATOR}`")
  if FLAGS.check or not stale:
    print(f"all {len(CHAPTERS)} notebooks up to date")
  else:
    print(f"rewrote {len(stale)} of {len(CHAPTERS)} notebooks: "
          f"{', '.join(os.path.relpath(p) for p in stale)}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
