r"""Runs an experiment grid from a spec and renders its tables and plots.

  python -m simulations.reproduce --spec=experiments/mcmahan.yaml
  python -m simulations.reproduce --spec=... --only=fedavg_iid --dry_run

Finished runs are skipped and interrupted ones resumed, so rerunning a grid
continues it. A spec out_dir that cannot be written is refused before any
run; when runs fail, the tables of the others are still written and the
grid exits 2 (every failed run refused, e.g. a full disk) or 1, naming them. Writes <out_dir>/README.md (mean ± std over seeds and the
exact commands; with a `search` section also the trials and the values
chosen on the validation split), <out_dir>/table.tex and <out_dir>/accuracy.png (federated
runs: test accuracy per round, min-max band over seeds, the target line:
the spec's table.target_accuracy or the runs' --target_accuracy, and any
table.references) and, where runs measured
clients (--per_client_eval), <out_dir>/client_accuracy.png; with
table.upload_curves, <out_dir>/accuracy_vs_upload.png (test accuracy against
the cumulative uploaded megabytes); with table.published, a table of the
settings against published values and the difference in points
(fedclf/results/published.py); with table.accuracy_at_rounds and
table.reference, accuracy at those rounds and the rounds each setting needs
to reach the reference setting's final accuracy
(fedclf/results/round_table.py). See fedclf/results/grid.py for the spec
format.
"""

import os
import sys

from absl import flags

from fedclf import cli
from fedclf.errors import UserError

cli.define_common_flags()
flags.DEFINE_string("spec", None, "Experiment spec (.yaml or .csv).")
flags.DEFINE_list("only", [], "Run only these run names.")
flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.")
flags.DEFINE_bool("tables_only", False,
                  "Render tables from finished runs, run nothing.")
flags.DEFINE_bool("require_clean", False,
                  "Refuse to write runs into a spec out_dir with committed "
                  "results while the checkout has uncommitted changes "
                  "(without it: a warning).")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  # Checked here, not by absl, so that --list answers without a spec.
  if not FLAGS.spec:
    raise UserError("--spec is required: an experiment spec (.yaml or "
                    ".csv), e.g. --spec=experiments/mcmahan.yaml")
  # pylint: disable=g-import-not-at-top
  from fedclf.results import curves
  from fedclf.results import grid
  from fedclf.results import provenance
  from fedclf.results import published as published_lib
  from fedclf.results import round_table
  from fedclf.results import search
  from fedclf.results import tables
  from fedclf.results.record import atomic_write_text
  # pylint: enable=g-import-not-at-top
  spec = grid.load_spec(FLAGS.spec)
  target, references = grid.table_lines(spec.table, FLAGS.spec)
  published = published_lib.parse(spec.table, FLAGS.spec)
  by_round = round_table.parse(spec.table, FLAGS.spec)
  tables.check_table_owner(spec.out_dir, FLAGS.spec)
  outcomes = {}
  if not FLAGS.tables_only:
    if not FLAGS.dry_run:
      grid.check_writable(spec.out_dir)
      provenance.check_clean_for_results(spec.out_dir, FLAGS.require_clean)
    outcomes = grid.run_grid(spec, FLAGS.only, FLAGS.dry_run)
    for name, outcome in outcomes.items():
      print(f"{name}: {outcome}")
    if FLAGS.dry_run:
      return
  table_runs = spec.runs
  search_text = ""
  if spec.search is not None:
    # The table reports the final runs (chosen values, test set); the
    # trials, scored on validation only, get their own table.
    record = grid.choose_and_record(spec)
    table_runs = grid.final_runs(spec, record)
    search_text = "\n" + search.markdown(record)
  # Seeds are grouped as the spec declares them, not by recorded flags,
  # which differ when a run predates a flag.
  setting_of = grid.setting_labels(table_runs)
  runs = [r for r in tables.load_runs(spec.out_dir) if r["name"] in setting_of]
  if not runs:
    cli.exit_with_user_error(f"no finished runs under {spec.out_dir}")
  title = str(spec.table.get("title", os.path.basename(spec.out_dir)))
  text = tables.seed_table(runs, title, setting_of) + search_text
  if published:
    text += "\n" + published_lib.markdown(
        tables.group_by_setting(runs, setting_of), published)
  federated = [r for r in runs if "rounds_run" in r["summary"]]
  if by_round is not None:
    # Its table and plot compare supervised runs; a pretraining run of the
    # same grid (objective simclr, kNN accuracy per round) stays in the
    # seed table only.
    federated = [r for r in federated if tables.run_flags(r).get(
        "objective", "supervised") == "supervised"]
  if federated:
    groups = {label: [m["dir"] for m in members] for label, members in
              tables.group_by_setting(federated, setting_of).items()}
    curves.plot_seed_bands(groups, os.path.join(spec.out_dir,
                                                "accuracy.png"), title,
                           target=target, references=references)
    if by_round is not None:
      text += "\n" + round_table.markdown(
          tables.group_by_setting(federated, setting_of), by_round, FLAGS.spec)
    text += "\n![test accuracy per round](accuracy.png)\n"
    if spec.table.get("upload_curves"):
      curves.plot_seed_bands(
          groups, os.path.join(spec.out_dir, "accuracy_vs_upload.png"),
          title, target=target, references=references,
          x=curves.UPLOAD_MEGABYTES)
      text += ("\n![test accuracy against cumulative uploaded MB]"
               "(accuracy_vs_upload.png)\n")
    if curves.plot_client_accuracy(
        groups, os.path.join(spec.out_dir, "client_accuracy.png"), title):
      text += ("\n![per-client accuracy of the final model]"
               "(client_accuracy.png)\n")
  readme = os.path.join(spec.out_dir, "README.md")
  atomic_write_text(readme, text + "\n" + tables.regenerate_line(FLAGS.spec)
                    + tables.hand_written_part(readme))
  atomic_write_text(os.path.join(spec.out_dir, "table.tex"),
                    tables.latex_table(runs, title, setting_of))
  print(f"wrote {spec.out_dir}/README.md, table.tex"
        f"{', accuracy.png' if federated else ''}")
  failed = grid.failure_report(outcomes)
  if failed:
    print(f"error: {failed[0]}", file=sys.stderr)
    sys.exit(failed[1])


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
