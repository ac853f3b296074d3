r"""Renders a Markdown table from finished runs.

  python -m simulations.tables --runs=results/baselines \
      --out=results/baselines/README.md --title="Centralized baselines"
"""

import os

from absl import flags

from fedclf import cli

cli.define_common_flags()
flags.DEFINE_string("runs", None, "Directory holding run folders.")
flags.DEFINE_string("out", "", "Markdown file to write (default: print).")
flags.DEFINE_string("title", "Results", "Table title.")
flags.mark_flag_as_required("runs")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  from fedclf.results import tables  # pylint: disable=g-import-not-at-top
  text = tables.results_table(tables.load_runs(FLAGS.runs), FLAGS.title)
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w") as f:
      f.write(text)
    print(f"wrote {FLAGS.out}")
  else:
    print(text)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
