"""Chapter 7: interpretation (saliency, integrated gradients, Grad-CAM) of
chapter 4's models with `python -m fedclf.interpret`."""

from __future__ import annotations

import os

from docs.guide import core
from docs.guide.chapters import ch04_architectures
from docs.guide.core import Command

EXPLAINED, COMPARED = "cnn", "lenet5"
FIGURES = ("attributions", "randomization", "randomization_maps", "compare",
           "filters", "activations", "architecture")


def interpret_command(paths: core.Paths) -> Command:
  return Command("fedclf.interpret", (
      f"--run_dir={ch04_architectures.run_dir(paths, EXPLAINED)}",
      f"--name={EXPLAINED}",
      f"--compare_run_dir={ch04_architectures.run_dir(paths, COMPARED)}",
      f"--compare_name={COMPARED}", "--examples=3", "--misclassified=3",
      "--ig_steps=64", "--smoothgrad_samples=16",
      f"--out_dir={paths.run('ch07', 'interpret')}"))


def _similarity_table(by_method) -> str:
  """How alike two sets of maps are, per attribution method."""
  return core.markdown_table(
      ["method", "Spearman rho of abs(map), all pixels", "on the digit only",
       "SSIM"],
      [[f"`{m}`", f"{v['spearman_abs']:.2f}",
        f"{v['spearman_abs_foreground']:.2f}", f"{v['ssim']:.2f}"]
       for m, v in by_method.items()])


def _interpret(ctx: core.Context) -> None:
  # The explained models are chapter 4's (trained again if missing).
  ctx.run_all([ch04_architectures.zoo_command(ctx.paths, m)
               for m in (EXPLAINED, COMPARED)])
  command = interpret_command(ctx.paths)
  printed = ctx.run(command)
  out = command.out_dir()
  for name in FIGURES:
    core.copy_figure(os.path.join(out, f"{name}.png"),
                     ctx.figure(f"ch07_{name}.png"))
  summary = core.read_json(os.path.join(out, "summary.json"))
  completeness = core.read_json(os.path.join(out, "ig_completeness.json"))
  ctx.write_output("ch07_command.md", core.bash_block([command]))
  ctx.write_output("ch07_output.txt", printed.strip())
  rows = []
  for model in (EXPLAINED, COMPARED):
    c = completeness.get(model)
    if c:
      rows.append([f"`{model}`", "passed" if c["passed"] else "FAILED",
                   f"{c['max_relative_error']:.2e}"])
  ctx.write_output("ch07_completeness.md", core.markdown_table(
      ["model", "integrated gradients completeness", "max relative error"],
      rows))
  ctx.write_output("ch07_randomization.md",
                   _similarity_table(summary["randomization_final_step"]))
  ctx.write_output("ch07_compare.md",
                   _similarity_table(summary["comparison"]))
  wrong = len(summary["misclassified_examples"])
  ctx.write_output("ch07_summary.md", (
      f"The {EXPLAINED} model scores {summary['test_accuracy']:.4f} on the "
      f"test slice; the grid shows {len(summary['examples']) - wrong} "
      f"correctly classified and {wrong} misclassified test images. "
      f"Grad-CAM explains the layer `{summary['gradcam_layer']}`.\n"))


CHAPTER = core.Chapter(7, "07-interpretation", "Interpretation", (
    core.Step("ch07.interpret", (
        "outputs/ch07_command.md", "outputs/ch07_output.txt",
        "outputs/ch07_completeness.md", "outputs/ch07_randomization.md",
        "outputs/ch07_compare.md", "outputs/ch07_summary.md",
        *(f"figures/ch07_{n}.png" for n in FIGURES)), _interpret,
              run_dirs=("ch07/interpret",)),
))
