"""Chapter 5: training strategies (schedules, regularization, early
stopping, hyper-parameter search), curves side by side."""

from __future__ import annotations

import os

from docs.guide import core
from docs.guide.core import Command

# LeNet-5 on 2,000 Fashion-MNIST images: small enough for seconds per run,
# hard enough that schedules and regularizers show.
BASE = ("--dataset=fashion_mnist", "--train_limit=2000", "--test_limit=1000",
        "--model=lenet5", "--epochs=15", "--batch_size=32",
        "--optimizer=momentum", "--lr=0.05", "--val_fraction=0.2",
        "--checkpoint_every=0")
SCHEDULES = {
    "constant": ("--lr_schedule=constant",),
    "step": ("--lr_schedule=step", "--step_epochs=5", "--step_gamma=0.3"),
    "exponential": ("--lr_schedule=exponential",),
    "cosine": ("--lr_schedule=cosine",),
    "cosine_warmup": ("--lr_schedule=cosine", "--warmup_epochs=2"),
}
# Each regularizer is added to the cosine run.
REGULARIZERS = {
    "dropout": ("--dropout=0.3",),
    "weight_decay": ("--weight_decay=0.01",),
    "label_smoothing": ("--label_smoothing=0.1",),
    "augment": ("--augment=crop,flip",),
}
EARLY_STOPPING = ("--lr_schedule=constant", "--epochs=40",
                  "--early_stopping_patience=3")
SEARCH_SPEC = "docs/guide/specs/ch05_search.yaml"


def _command(paths: core.Paths, name: str, extra) -> Command:
  args = [a for a in BASE if not any(
      a.split("=")[0] == e.split("=")[0] for e in extra)]
  return Command("baselines.centralized",
                 (*args, *extra, f"--out_dir={paths.run('ch05', name)}"))


def schedule_commands(paths):
  return {n: _command(paths, n, e) for n, e in SCHEDULES.items()}


def regularizer_commands(paths):
  return {n: _command(paths, n, SCHEDULES["cosine"] + e)
          for n, e in REGULARIZERS.items()}


def early_stopping_command(paths):
  return _command(paths, "early_stopping", EARLY_STOPPING)


def _epochs(run_dir: str):
  return [r for r in core.read_metrics(run_dir) if "train_loss" in r]


def _curves(fig, runs, keys, columns, title_for):
  """One panel per metric in `keys`, one line per run (label -> folder)."""
  for k, key in enumerate(keys):
    ax = fig.add_subplot(1, columns, k + 1)
    for i, (label, run_dir) in enumerate(runs.items()):
      rows = _epochs(run_dir)
      ax.plot([r["epoch"] for r in rows], [r[key] for r in rows],
              label=label, color=f"C{i}", linewidth=1.5)
    ax.set_title(title_for(key), fontsize=9)
    ax.set_xlabel("epoch", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


def _summary_row(label: str, run_dir: str):
  s = core.read_json(os.path.join(run_dir, "summary.json"))
  last = _epochs(run_dir)[-1]
  return [label, f"{last['train_accuracy']:.4f}",
          f"{s['best_val_accuracy']:.4f}", str(s["best_epoch"]),
          f"{s['test_accuracy']:.4f}"]


def _compare(ctx: core.Context, name: str, runs, shown, keys, header,
             row) -> None:
  """Runs `runs` (label -> command), plots `keys` per epoch side by side,
  shows the `shown` commands and a table of `row(label, run_dir)`."""
  ctx.run_all(list(runs.values()))
  dirs = {label: c.out_dir() for label, c in runs.items()}
  fig = core.new_figure(11, 3.4)
  _curves(fig, dirs, keys, len(keys), lambda k: k.replace("_", " "))
  core.save_figure(fig, ctx.figure(f"ch05_{name}.png"))
  ctx.write_output(f"ch05_{name}_commands.md", core.bash_block(shown))
  ctx.write_output(f"ch05_{name}.md", core.markdown_table(
      header, [row(label, d) for label, d in dirs.items()]))


def _schedules(ctx: core.Context) -> None:
  commands = schedule_commands(ctx.paths)
  _compare(ctx, "schedules", commands, list(commands.values()),
           ("learning_rate", "train_loss", "val_accuracy"),
           ["schedule", "final train accuracy", "best val accuracy",
            "best epoch", "test accuracy"],
           lambda label, run_dir: _summary_row(f"`{label}`", run_dir))


def _regularization(ctx: core.Context) -> None:
  commands = regularizer_commands(ctx.paths)

  def row(label, run_dir):
    cells = _summary_row(label, run_dir)
    cells.insert(3, f"{float(cells[1]) - float(cells[2]):+.4f}")
    return cells

  _compare(ctx, "regularization", {
      "none (cosine run)": schedule_commands(ctx.paths)["cosine"],
      **commands}, list(commands.values()),
           ("train_accuracy", "val_accuracy", "val_loss"),
           ["regularizer", "final train accuracy", "best val accuracy",
            "train - val", "best epoch", "test accuracy"], row)


def _early_stopping(ctx: core.Context) -> None:
  command = early_stopping_command(ctx.paths)
  ctx.run_all([command])
  s = core.read_json(os.path.join(command.out_dir(), "summary.json"))
  rows = _epochs(command.out_dir())
  fig = core.new_figure(6, 3.4)
  ax = fig.add_subplot(1, 1, 1)
  epochs = [r["epoch"] for r in rows]
  ax.plot(epochs, [r["train_loss"] for r in rows], label="train loss")
  ax.plot(epochs, [r["val_loss"] for r in rows], label="val loss")
  ax.axvline(s["best_epoch"], color="C2", linestyle="--",
             label=f"best epoch {s['best_epoch']} (weights kept)")
  ax.axvline(s["epochs_run"], color="C3", linestyle=":",
             label=f"stopped after epoch {s['epochs_run']}")
  ax.set_xlabel("epoch")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  core.save_figure(fig, ctx.figure("ch05_early_stopping.png"))
  ctx.write_output("ch05_early_stopping_command.md", core.bash_block([command]))
  ctx.write_output("ch05_early_stopping.md", (
      f"Asked for 40 epochs, the run stopped after epoch {s['epochs_run']} "
      f"(`stopped_early: {str(s['stopped_early']).lower()}` in summary.json): "
      f"validation accuracy peaked at {s['best_val_accuracy']:.4f} in epoch "
      f"{s['best_epoch']} and did not improve for 3 epochs. The model keeps "
      f"the weights of epoch {s['best_epoch']}, whose test accuracy is "
      f"{s['test_accuracy']:.4f}.\n"))


def _search(ctx: core.Context) -> None:
  out = ctx.run_spec(SEARCH_SPEC, "ch05_search")
  readme = core.read_text(os.path.join(out, "README.md"))
  ctx.write_output("ch05_search.md", core.demote_headings(readme))
  record = core.read_json(os.path.join(out, "search.json"))
  fig = core.new_figure(5.5, 3.4)
  ax = fig.add_subplot(1, 1, 1)
  for smoothing, marker in ((0.0, "o"), (0.1, "s")):
    trials = [t for t in record["trials"] if t["objective"] is not None and
              t["values"]["label_smoothing"] == smoothing]
    ax.scatter([t["values"]["lr"] for t in trials],
               [t["objective"] for t in trials], marker=marker,
               label=f"label_smoothing={smoothing}")
  ax.scatter([record["chosen"]["lr"]], [record["best_objective"]], s=160,
             facecolors="none", edgecolors="C3", label="chosen")
  ax.set_xscale("log")
  ax.set_xlabel("peak learning rate")
  ax.set_ylabel("best validation accuracy")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  core.save_figure(fig, ctx.figure("ch05_search.png"))


CHAPTER = core.Chapter(5, "05-training", "Training strategies", (
    core.Step("ch05.schedules", ("figures/ch05_schedules.png",
                                 "outputs/ch05_schedules.md",
                                 "outputs/ch05_schedules_commands.md"),
              _schedules, run_dirs=tuple(f"ch05/{n}" for n in SCHEDULES)),
    core.Step("ch05.regularization", (
        "figures/ch05_regularization.png", "outputs/ch05_regularization.md",
        "outputs/ch05_regularization_commands.md"), _regularization,
              run_dirs=tuple(f"ch05/{n}" for n in REGULARIZERS)),
    core.Step("ch05.early_stopping", (
        "figures/ch05_early_stopping.png", "outputs/ch05_early_stopping.md",
        "outputs/ch05_early_stopping_command.md"), _early_stopping,
              run_dirs=("ch05/early_stopping",)),
    core.Step("ch05.search", ("outputs/ch05_search_spec.md",
                              "outputs/ch05_search_command.md",
                              "outputs/ch05_search.md",
                              "figures/ch05_search.png"), _search,
              run_dirs=("ch05/search",)),
))
