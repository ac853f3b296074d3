"""Chapter 10: where to go next (an algorithm plugin; a paper's table from
a spec)."""

from __future__ import annotations

import os

from docs.guide import core
from docs.guide.chapters import ch09_advanced
from docs.guide.core import Command

PLUGIN_DIR = "examples/plugin_fedmedian"
PLUGIN_ENV = (("PYTHONPATH", PLUGIN_DIR),)
PAPER_SPEC = "docs/guide/specs/ch10_mcmahan_digits.yaml"


def plugin_commands(paths: core.Paths):
  """--list with the plugin loaded, and a run with the same flags as
  chapter 9's IID FedAvg run (so the two compare)."""
  listing = Command("simulations.federated", ("--plugin=fedclf_fedmedian",
                                              "--list"), env=PLUGIN_ENV)
  iid = ch09_advanced.FEDERATED_RUNS["fedavg_iid"]
  run = Command("simulations.federated", (
      "--plugin=fedclf_fedmedian", *ch09_advanced.FEDERATED,
      "--algorithm=fedmedian",
      *(a for a in iid if a.startswith("--partition")),
      f"--out_dir={paths.run('ch10', 'fedmedian_iid')}"), env=PLUGIN_ENV)
  return listing, run


def _plugin(ctx: core.Context) -> None:
  listing, run = plugin_commands(ctx.paths)
  listed = ctx.run(listing)
  printed = ctx.run(run)
  fedavg = ch09_advanced.federated_commands(ctx.paths)["fedavg_iid"]
  ctx.run_all([fedavg])
  median = core.read_json(os.path.join(run.out_dir(), "summary.json"))
  mean = core.read_json(os.path.join(fedavg.out_dir(), "summary.json"))
  ctx.write_output("ch10_plugin_commands.md", core.bash_block([listing, run]))
  ctx.write_output("ch10_plugin_output.txt", (
      "\n".join(l for l in listed.splitlines() if l.startswith("algorithms"))
      + "\n" + printed.strip()))
  ctx.write_output("ch10_plugin.md", core.markdown_table(
      ["aggregation", "final test accuracy", "macro F1", "train seconds"],
      [["mean (`fedavg`, chapter 9)", f"{mean['final_test_accuracy']:.4f}",
        f"{mean['final_test_macro_f1']:.4f}", f"{mean['train_seconds']:.0f}"],
       ["coordinate-wise median (`fedmedian`)",
        f"{median['final_test_accuracy']:.4f}",
        f"{median['final_test_macro_f1']:.4f}",
        f"{median['train_seconds']:.0f}"]]))


def _paper(ctx: core.Context) -> None:
  out = ctx.run_spec(PAPER_SPEC, "ch10_paper")
  # The run folders are scratch (git-ignored): the plot moves into the guide.
  core.copy_figure(os.path.join(out, "accuracy.png"),
                   ctx.figure("ch10_paper_accuracy.png"))
  readme = core.read_text(os.path.join(out, "README.md")).replace(
      "(accuracy.png)", "(figures/ch10_paper_accuracy.png)")
  ctx.write_output("ch10_paper.md", core.demote_headings(readme))
  ctx.write_output("ch10_paper_table.tex", core.read_text(
      os.path.join(out, "table.tex")))


CHAPTER = core.Chapter(10, "10-next", "Where to go next", (
    core.Step("ch10.plugin", ("outputs/ch10_plugin_commands.md",
                              "outputs/ch10_plugin_output.txt",
                              "outputs/ch10_plugin.md"), _plugin,
              run_dirs=("ch10/fedmedian_iid",)),
    core.Step("ch10.paper", ("outputs/ch10_paper_spec.md",
                             "outputs/ch10_paper_command.md",
                             "outputs/ch10_paper.md",
                             "figures/ch10_paper_accuracy.png",
                             "outputs/ch10_paper_table.tex"), _paper,
              run_dirs=("ch10/mcmahan_digits",)),
))
