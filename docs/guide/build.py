r"""Regenerates the guide's figures, tables and chapters (`make guide`).

  python -m docs.guide.build                 # every chapter, resuming
  python -m docs.guide.build --chapter=3,4   # some chapters
  python -m docs.guide.build --chapter=4 --force   # redo, runs included

Run from the repository root with FEDCLF_DATA_DIR pointing at the data.
Steps whose outputs exist are skipped, so an interrupted build continues;
binary runs land in runs/guide/ and figures/outputs in docs/guide/.
"""

import os

from absl import flags

from fedclf import cli

cli.define_common_flags()
flags.DEFINE_list("chapter", [],
                  "Chapter numbers to build (default: all, in order).")
flags.DEFINE_bool("force", False,
                  "Rebuild the chosen chapters' steps even when their "
                  "outputs exist (their runs are redone too).")
flags.DEFINE_bool("render_only", False,
                  "Only render the templates from the existing outputs.")
flags.DEFINE_string("guide_dir", "",
                    "Folder with templates/ and where figures/, outputs/ "
                    "and the chapters go (default: this package's folder).")
flags.DEFINE_string("results_dir", "results",
                    "The project's results folder (chapter 9 embeds its "
                    "tables).")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from docs.guide import core
  from docs.guide.chapters import CHAPTERS
  from docs.guide.chapters import select
  # pylint: enable=g-import-not-at-top
  paths = core.Paths(guide_dir=os.path.abspath(FLAGS.guide_dir or
                                               core.GUIDE_DIR),
                     results_dir=FLAGS.results_dir)
  chosen = select(FLAGS.chapter)
  if FLAGS.render_only:
    for chapter in chosen:
      print(f"wrote {core.render_chapter(chapter, paths.guide_dir)}")
  else:
    core.build(chosen, paths, force=FLAGS.force)
  print(f"wrote {core.render_index(CHAPTERS, paths)}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
