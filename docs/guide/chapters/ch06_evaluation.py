"""Chapter 6: evaluation (metrics, confusion matrix, holdout versus k-fold
cross-validation)."""

from __future__ import annotations

import os

import numpy as np

from docs.guide import core
from docs.guide.core import Command

# The metrics: LeNet-5 on a Fashion-MNIST slice (its confusions are
# instructive).
BASE = ("--dataset=fashion_mnist", "--train_limit=3000", "--test_limit=2000",
        "--model=lenet5", "--epochs=10", "--batch_size=32",
        "--optimizer=momentum", "--lr=0.05", "--lr_schedule=cosine",
        "--val_fraction=0.2", "--checkpoint_every=0")
# Holdout against CV: the seed must change only the split (and the
# initialization), never the data, so a dataset without --train_limit
# slices (which follow the seed) and with a fixed test split: digits.
SPLIT_BASE = ("--dataset=digits", "--model=cnn", "--epochs=15",
              "--batch_size=32", "--optimizer=momentum", "--lr=0.02",
              "--lr_schedule=cosine", "--val_fraction=0.2",
              "--checkpoint_every=0")
FOLDS = 5
# The CV run's final model is the seed-0 holdout run (same split, same
# init), so the other splits come from seeds 1-4.
HOLDOUT_SEEDS = (1, 2, 3, 4)


def metrics_command(paths: core.Paths) -> Command:
  return Command("baselines.centralized",
                 (*BASE, f"--out_dir={paths.run('ch06', 'lenet5')}"))


def cv_command(paths: core.Paths) -> Command:
  return Command("baselines.centralized", (
      *SPLIT_BASE, f"--cv_folds={FOLDS}",
      f"--out_dir={paths.run('ch06', 'digits_cv5')}"))


def holdout_command(paths: core.Paths, seed: int) -> Command:
  return Command("baselines.centralized", (
      *SPLIT_BASE, f"--seed={seed}",
      f"--out_dir={paths.run('ch06', f'digits_holdout_seed{seed}')}"))


def _metrics(ctx: core.Context) -> None:
  from fedclf.metrics import plot_confusion_matrix  # pylint: disable=g-import-not-at-top
  s = ctx.run_shown(metrics_command(ctx.paths), "ch06")
  rows = [[c["name"], f"{c['precision']:.3f}", f"{c['recall']:.3f}",
           f"{c['f1']:.3f}", c["support"]] for c in s["test_per_class"]]
  rows.append(["**macro average**", f"**{s['test_macro_precision']:.3f}**",
               f"**{s['test_macro_recall']:.3f}**",
               f"**{s['test_macro_f1']:.3f}**",
               sum(c["support"] for c in s["test_per_class"])])
  ctx.write_output("ch06_per_class.md", core.markdown_table(
      ["class", "precision", "recall", "F1", "support"], rows) +
      f"\nTest accuracy {s['test_accuracy']:.4f}, test loss "
      f"{s['test_loss']:.4f}.\n")
  cm = np.asarray(s["test_confusion_matrix"])
  names = [c["name"] for c in s["test_per_class"]]
  plot_confusion_matrix(cm, ctx.figure("ch06_confusion_matrix.png"), names,
                        f"LeNet-5 on Fashion-MNIST: test accuracy "
                        f"{s['test_accuracy']:.3f}")
  # The most confused pair, off the diagonal, for the prose.
  off = cm.copy()
  np.fill_diagonal(off, 0)
  true, pred = np.unravel_index(np.argmax(off), off.shape)
  worst = min(s["test_per_class"], key=lambda c: c["f1"])
  ctx.write_output("ch06_confusions.md", (
      f"The largest off-diagonal cell: {off[true, pred]} test images of "
      f"**{names[true]}** were predicted as **{names[pred]}**. The weakest "
      f"class is **{worst['name']}** (F1 {worst['f1']:.3f}: precision "
      f"{worst['precision']:.3f}, recall {worst['recall']:.3f}).\n"))


def _holdout_vs_cv(ctx: core.Context) -> None:
  commands = [holdout_command(ctx.paths, s) for s in HOLDOUT_SEEDS]
  cv = cv_command(ctx.paths)
  ctx.run_all([cv, *commands])
  cv_summary = core.read_json(os.path.join(cv.out_dir(), "summary.json"))
  folds = cv_summary["cross_validation"]["fold_accuracy"]
  holdout_val, holdout_test = [], []
  for run_dir in [cv.out_dir()] + [c.out_dir() for c in commands]:
    # The last epoch's validation accuracy, like a CV fold's: no selection.
    last = [r for r in core.read_metrics(run_dir) if "val_accuracy" in r][-1]
    holdout_val.append(last["val_accuracy"])
    holdout_test.append(core.read_json(os.path.join(
        run_dir, "summary.json"))["test_accuracy"])
  seeds = (0,) + HOLDOUT_SEEDS
  rows = [[f"holdout 20%, seed {seed}", f"{v:.4f}", f"{t:.4f}"]
          for seed, v, t in zip(seeds, holdout_val, holdout_test)]
  rows.append([f"**holdout: mean ± std over {len(seeds)} splits**",
               f"**{np.mean(holdout_val):.4f} ± {np.std(holdout_val):.4f}**",
               f"**{np.mean(holdout_test):.4f} ± {np.std(holdout_test):.4f}**"])
  rows.append([f"**{FOLDS}-fold CV (one run): mean ± std over folds**",
               f"**{np.mean(folds):.4f} ± {np.std(folds):.4f}**",
               f"{cv_summary['test_accuracy']:.4f} (final model)"])
  ctx.write_output("ch06_holdout_commands.md",
                   core.bash_block([cv] + commands))
  ctx.write_output("ch06_holdout_vs_cv.md", core.markdown_table(
      ["estimate", "validation accuracy", "test accuracy"], rows) +
      f"\nCV fold accuracies: {', '.join(f'{f:.4f}' for f in folds)}.\n")
  fig = core.new_figure(6.5, 3.0)
  ax = fig.add_subplot(1, 1, 1)
  ax.scatter(holdout_val, [1] * len(holdout_val), color="C0",
             label="holdout estimate (one per split)")
  ax.scatter(folds, [0] * len(folds), color="C1",
             label="CV fold accuracy")
  ax.errorbar([np.mean(folds)], [0], xerr=[np.std(folds)], color="C1",
              capsize=6, marker="D", markersize=8, label="CV mean ± std")
  ax.axvline(np.mean(holdout_test), color="C2", linestyle="--",
             label="test accuracy (mean over runs)")
  ax.set_yticks([0, 1])
  ax.set_yticklabels([f"{FOLDS}-fold CV", "20% holdout"])
  ax.set_ylim(-0.7, 1.7)
  ax.set_xlabel("accuracy")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  core.save_figure(fig, ctx.figure("ch06_holdout_vs_cv.png"))


CHAPTER = core.Chapter(6, "06-evaluation", "Evaluation", (
    core.Step("ch06.metrics", ("outputs/ch06_command.md",
                               "outputs/ch06_output.txt",
                               "outputs/ch06_per_class.md",
                               "outputs/ch06_confusions.md",
                               "figures/ch06_confusion_matrix.png"), _metrics,
              run_dirs=("ch06/lenet5",)),
    core.Step("ch06.holdout_vs_cv", ("outputs/ch06_holdout_commands.md",
                                     "outputs/ch06_holdout_vs_cv.md",
                                     "figures/ch06_holdout_vs_cv.png"),
              _holdout_vs_cv,
              run_dirs=("ch06/digits_cv5",) + tuple(
                  f"ch06/digits_holdout_seed{s}" for s in HOLDOUT_SEEDS)),
))
