"""Chapter 1: image classification and the datasets."""

from __future__ import annotations

import os
import shutil

import numpy as np

from docs.guide import core
from docs.guide.core import Command

# One example per class in the sample grids; two rows of them.
SAMPLE_ROWS = 2
# The ImageNet-style folder: a few CIFAR-10 classes written out as PNGs.
FOLDER_CLASSES = ("airplane", "cat", "ship")
FOLDER_IMAGES_PER_CLASS = 60
FOLDER_DIR = "ch01/image_folder"
FOLDER_RUN = "ch01/image_folder_lenet5"

LIST = Command("baselines.centralized", ("--list",))


def folder_command(paths: core.Paths) -> Command:
  return Command("baselines.centralized", (
      "--dataset=image_folder", f"--dataset_path={paths.run(FOLDER_DIR)}",
      "--image_size=32", "--model=lenet5", "--optimizer=adam", "--lr=0.003",
      "--epochs=5", "--batch_size=32", f"--out_dir={paths.run(FOLDER_RUN)}"))


def _registry(ctx: core.Context) -> None:
  ctx.write_output("ch01_list.txt", ctx.run(LIST))
  ctx.write_output("ch01_list_command.md", core.bash_block([LIST]))


def ensure_image_folder(paths: core.Paths) -> str:
  """Writes (once) a folder of class subfolders of PNGs, the layout
  ImageNet uses, and returns its path."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from fedclf.data import DataConfig, load_dataset  # pylint: disable=g-import-not-at-top
  root = paths.run(FOLDER_DIR)
  if os.path.isdir(root):
    return root
  cifar = load_dataset(DataConfig("cifar10"))
  # Written beside and renamed at the end: a half-written folder would
  # otherwise pass for a finished one.
  partial = root + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  for name in FOLDER_CLASSES:
    label = cifar.class_names.index(name)
    folder = os.path.join(partial, name)
    os.makedirs(folder, exist_ok=True)
    members = np.flatnonzero(cifar.y_train == label)[:FOLDER_IMAGES_PER_CLASS]
    for i, index in enumerate(members):
      pixels = (cifar.x_train[index] * 255).round().astype(np.uint8)
      Image.fromarray(pixels).save(os.path.join(folder, f"{i:03d}.png"))
  os.replace(partial, root)
  return root


def _datasets(ctx: core.Context) -> None:
  # pylint: disable=g-import-not-at-top
  from fedclf.data import DataConfig, load_dataset
  # pylint: enable=g-import-not-at-top
  folder = ensure_image_folder(ctx.paths)
  configs = [DataConfig("mnist"), DataConfig("fashion_mnist"),
             DataConfig("usps"), DataConfig("cifar10"), DataConfig("digits"),
             DataConfig("image_folder", path=folder)]
  rows = []
  hist_fig = core.new_figure(12, 5.6)
  for k, config in enumerate(configs):
    ds = load_dataset(config)
    mean, std = ds.channel_stats()
    rows.append([f"`{ds.name}`", len(ds.y_train), len(ds.y_test),
                 "x".join(map(str, ds.input_shape)), ds.num_classes,
                 " ".join(f"{m:.3f}" for m in mean),
                 " ".join(f"{s:.3f}" for s in std),
                 ds.source.replace(os.path.expanduser("~"), "~").split(":")[0]])
    # Sample grid: the first SAMPLE_ROWS training examples of each class.
    shown = [np.flatnonzero(ds.y_train == c)[:SAMPLE_ROWS]
             for c in range(ds.num_classes)]
    columns = ds.num_classes
    fig = core.new_figure(max(1.0 * columns, 3.5), 1.15 * SAMPLE_ROWS + 0.3)
    for row in range(SAMPLE_ROWS):
      picks = [s[row] for s in shown if len(s) > row]
      core.image_grid(fig, ds.x_train[picks],
                      [ds.class_names[c] if row == 0 else ""
                       for c in range(len(picks))], SAMPLE_ROWS, columns,
                      first=row * columns + 1)
    core.save_figure(fig, ctx.figure(f"ch01_samples_{ds.name}.png"))
    ax = hist_fig.add_subplot(2, 3, k + 1)
    classes = np.arange(ds.num_classes)
    ax.bar(classes - 0.2, np.bincount(ds.y_train, minlength=ds.num_classes),
           width=0.4, color="C0", label="train")
    ax.bar(classes + 0.2, np.bincount(ds.y_test, minlength=ds.num_classes),
           width=0.4, color="C1", label="test")
    ax.set_title(f"{ds.name} ({len(ds.y_train)} train)", fontsize=9)
    ax.set_xticks(np.arange(ds.num_classes))
    ax.set_xticklabels(ds.class_names, rotation=90, fontsize=6)
    ax.tick_params(axis="y", labelsize=7)
    if k == 0:
      ax.legend(fontsize=7, loc="lower right")
  core.save_figure(hist_fig, ctx.figure("ch01_class_histograms.png"))
  ctx.write_output("ch01_datasets.md", core.markdown_table(
      ["dataset", "train", "test", "shape (HxWxC)", "classes",
       "pixel mean", "pixel std", "read from"], rows))


def _folder_run(ctx: core.Context) -> None:
  ensure_image_folder(ctx.paths)
  summary = ctx.run_shown(folder_command(ctx.paths), "ch01_folder")
  ds = summary["dataset"]
  ctx.write_output("ch01_folder_summary.md", (
      f"The folder loader found {ds['num_classes']} classes "
      f"({', '.join(FOLDER_CLASSES)}), held out a stratified "
      f"{ds['test_examples']} of the {ds['train_examples'] + ds['test_examples']}"
      f" images as the test set and trained on the rest: test accuracy "
      f"{summary['test_accuracy']:.3f} after {summary['epochs_run']} epochs "
      f"({summary['train_seconds']:.0f} s).\n"))


CHAPTER = core.Chapter(1, "01-datasets", "Image classification and the datasets", (
    core.Step("ch01.registry", ("outputs/ch01_list.txt",
                                "outputs/ch01_list_command.md"), _registry),
    core.Step("ch01.datasets", (
        "outputs/ch01_datasets.md", "figures/ch01_class_histograms.png",
        *(f"figures/ch01_samples_{n}.png" for n in (
            "mnist", "fashion_mnist", "usps", "cifar10", "digits",
            "image_folder"))), _datasets, run_dirs=(FOLDER_DIR,)),
    core.Step("ch01.folder_run", (
        "outputs/ch01_folder_command.md", "outputs/ch01_folder_output.txt",
        "outputs/ch01_folder_summary.md"), _folder_run,
              run_dirs=(FOLDER_RUN,)),
))
