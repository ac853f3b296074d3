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
flags.DEFINE_string("plot", "",
                    "Also plot test accuracy per round of the federated "
                    "runs to this PNG (linked from the table).")
flags.mark_flag_as_required("runs")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  from fedclf.results import tables  # pylint: disable=g-import-not-at-top
  runs = tables.load_runs(FLAGS.runs)
  text = tables.results_table(runs, FLAGS.title)
  if FLAGS.plot:
    from fedclf.results import curves  # pylint: disable=g-import-not-at-top
    lines = {r["name"]: curves.read_curve(r["dir"]) for r in runs
             if "algorithm" in r["summary"]}
    curves.plot_round_curves(lines, FLAGS.plot, FLAGS.title)
    if FLAGS.out:
      rel = os.path.relpath(FLAGS.plot, os.path.dirname(
          os.path.abspath(FLAGS.out)))
      text += f"\n![test accuracy per round]({rel})\n"
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
