"""Chapter 4: the model zoo on the same small data, one table."""

from __future__ import annotations

import io
import os

from docs.guide import core
from docs.guide.core import Command

MODELS = ("mlp", "lenet5", "cnn", "alexnet", "resnet20", "resnet18",
          "efficientnet_b0")
# Shared by every model: a 1,000-image MNIST slice, 3 epochs of Adam.
DATA_FLAGS = ("--dataset=mnist", "--train_limit=1000", "--test_limit=1000")
TRAIN_FLAGS = ("--epochs=3", "--batch_size=32", "--optimizer=adam",
               "--lr=0.001", "--val_fraction=0", "--checkpoint_every=0")
INPUT_SHAPE = (28, 28, 1)
# A model from outside the zoo, registered by a plugin module.
PLUGIN = "docs.guide.snippets.tiny_cnn_plugin"
PLUGIN_MODEL = "tiny_cnn"


def run_dir(paths: core.Paths, model: str) -> str:
  return paths.run("ch04", model)


def zoo_command(paths: core.Paths, model: str) -> Command:
  plugin = (f"--plugin={PLUGIN}",) if model == PLUGIN_MODEL else ()
  return Command("baselines.centralized", (
      *plugin, *DATA_FLAGS, f"--model={model}", *TRAIN_FLAGS,
      f"--out_dir={run_dir(paths, model)}"))


def flops_per_image(model) -> int:
  """Floating-point operations of one inference (a multiply-add is 2), from
  TensorFlow's profiler on the traced graph."""
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from tensorflow.python.profiler import model_analyzer
  from tensorflow.python.profiler import option_builder
  # pylint: enable=g-import-not-at-top
  spec = tf.TensorSpec([1, *model.input_shape[1:]], tf.float32)
  graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(
      spec).graph
  options = option_builder.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  return int(model_analyzer.profile(graph, options=options).total_float_ops)


def _summary_text(model) -> str:
  out = io.StringIO()
  model.summary(print_fn=lambda line, **_: out.write(line + "\n"),
                line_length=78, expand_nested=True)
  return out.getvalue().rstrip()


def _zoo(ctx: core.Context) -> None:
  # pylint: disable=g-import-not-at-top
  import importlib
  from fedclf.models import build_classifier
  # pylint: enable=g-import-not-at-top
  importlib.import_module(PLUGIN)  # registers tiny_cnn for the FLOPs count
  models = MODELS + (PLUGIN_MODEL,)
  commands = [zoo_command(ctx.paths, m) for m in models]
  ctx.run_all(commands)
  rows, points = [], []
  for model_name, command in zip(models, commands):
    s = core.read_json(os.path.join(command.out_dir(), "summary.json"))
    flops = flops_per_image(build_classifier(model_name, INPUT_SHAPE, 10))
    train_accuracy = [r for r in core.read_metrics(command.out_dir())
                      if "train_accuracy" in r][-1]["train_accuracy"]
    rows.append([f"`{model_name}`", f"{s['parameters']:,}",
                 f"{flops / 1e6:,.1f}", f"{train_accuracy:.4f}",
                 f"{s['test_accuracy']:.4f}",
                 f"{s['test_macro_f1']:.4f}", f"{s['train_seconds']:.0f}",
                 f"{s['examples_per_second']:,.0f}"])
    points.append((model_name, s["parameters"], flops, s["test_accuracy"],
                   s["train_seconds"]))
  ctx.write_output("ch04_commands.md", core.bash_block(commands[:-1]))
  ctx.write_output("ch04_plugin_command.md", core.bash_block(commands[-1:]))
  ctx.write_output("ch04_zoo.md", core.markdown_table(
      ["model", "parameters", "MFLOPs / image", "train accuracy (epoch 3)",
       "test accuracy", "macro F1",
       "train seconds", "examples/s"], rows))
  fig = core.new_figure(10, 3.8)
  for k, (index, label) in enumerate(((2, "inference MFLOPs per image"),
                                      (4, "training seconds (3 epochs)"))):
    ax = fig.add_subplot(1, 2, k + 1)
    for i, point in enumerate(points):
      x = point[index] / (1e6 if index == 2 else 1)
      ax.scatter(x, point[3], s=30 + point[1] / 1e5, color=f"C{i}",
                 alpha=0.8)
      ax.annotate(point[0], (x, point[3]), fontsize=7,
                  xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
  fig.suptitle("MNIST, 1,000 training images, 3 epochs (marker area ~ "
               "parameters)", fontsize=9)
  core.save_figure(fig, ctx.figure("ch04_zoo.png"))
  for model_name in ("lenet5", "cnn"):
    ctx.write_output(f"ch04_{model_name}_summary.txt", _summary_text(
        build_classifier(model_name, INPUT_SHAPE, 10)))


CHAPTER = core.Chapter(4, "04-architectures", "Architectures", (
    core.Step("ch04.zoo", ("outputs/ch04_commands.md",
                           "outputs/ch04_plugin_command.md",
                           "outputs/ch04_zoo.md",
                           "figures/ch04_zoo.png",
                           "outputs/ch04_lenet5_summary.txt",
                           "outputs/ch04_cnn_summary.txt"), _zoo,
              run_dirs=tuple(f"ch04/{m}" for m in MODELS + (PLUGIN_MODEL,))),
))
