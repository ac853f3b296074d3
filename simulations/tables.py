r"""Renders a Markdown table from finished runs.

  python -m simulations.tables --runs=results/baselines \
      --out=/tmp/baselines.md --title="Centralized baselines"
  python -m simulations.tables --compare=experiments/ssl_comparison.yaml \
      --out=results/ssl/comparison.md

--compare takes a YAML file of rows {label, run, metric} and puts results of
different binaries (centralized, federated, SSL) side by side. An --out
that simulations.reproduce rendered (its Regenerate line names a spec) is
refused: that spec owns it. Rewriting any other --out keeps what is below
its hand-written `---` line.
"""

import os

from absl import flags

from fedclf import cli
from fedclf.errors import UserError

cli.define_common_flags()
flags.DEFINE_string("runs", None, "Directory holding run folders.")
flags.DEFINE_string("compare", None,
                    "YAML file {title, note, rows: [{label, run, metric}]}: "
                    "a comparison table of named runs.")
flags.DEFINE_string("out", "", "Markdown file to write (default: print).")
flags.DEFINE_string("title", "Results", "Table title.")
flags.DEFINE_string("plot", "",
                    "Also plot test accuracy per round of the federated "
                    "runs to this PNG (linked from the table).")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  # Checked here, not by absl, so that --list answers without them.
  if bool(FLAGS.runs) == bool(FLAGS.compare):
    raise UserError("give exactly one of --runs=DIR (a table of finished "
                    "runs) and --compare=FILE.yaml (a comparison table)")
  # Imported here: they load numpy, which --help and --list do without.
  # pylint: disable=g-import-not-at-top
  from fedclf.results import tables
  from fedclf.results.record import atomic_write_text
  # pylint: enable=g-import-not-at-top
  owner = FLAGS.out and tables.table_owner(FLAGS.out)
  if owner:
    raise UserError(f"{FLAGS.out} is rendered from {owner}: re-render it "
                    f"with python -m simulations.reproduce --spec={owner} "
                    "--tables_only, or give --out another file")
  if FLAGS.compare:
    text = tables.comparison_table(_read_yaml(FLAGS.compare), FLAGS.compare)
  else:
    runs = tables.load_runs(FLAGS.runs)
    text = tables.results_table(runs, FLAGS.title)
  if FLAGS.plot and FLAGS.runs:
    from fedclf.results import curves  # pylint: disable=g-import-not-at-top
    # One curve per run, with the runs' --target_accuracy as a line.
    groups = {r["name"]: [r["dir"]] for r in runs
              if "algorithm" in r["summary"]}
    curves.plot_seed_bands(groups, FLAGS.plot, FLAGS.title)
    if FLAGS.out:
      rel = os.path.relpath(FLAGS.plot, os.path.dirname(
          os.path.abspath(FLAGS.out)))
      text += f"\n![test accuracy per round]({rel})\n"
  if FLAGS.out:
    atomic_write_text(FLAGS.out, text + tables.hand_written_part(FLAGS.out))
    print(f"wrote {FLAGS.out}")
  else:
    print(text)


def _read_yaml(path: str):
  import yaml  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    cli.exit_with_user_error(f"comparison file {path} does not exist")
  try:
    with open(path) as f:
      spec = yaml.safe_load(f)
  except yaml.YAMLError as e:
    cli.exit_with_user_error(f"cannot parse {path}: {e}".splitlines()[0])
  if not isinstance(spec, dict):
    cli.exit_with_user_error(f"{path} must be a mapping")
  return spec


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
