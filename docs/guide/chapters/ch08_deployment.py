"""Chapter 8: deployment (SavedModel for TF Serving, TFLite float/int8,
TF.js) of chapter 4's models with `python -m fedclf.export`."""

from __future__ import annotations

import json
import os
import re

from docs.guide import core
from docs.guide.chapters import ch04_architectures
from docs.guide.core import Command

EXPORTED = ("cnn", "lenet5")  # chapter 4's models, exported as mnist_<model>
EXPORT_DIR = "ch08/exports"
RESULTS_DIR = "ch08/export"


def export_command(paths: core.Paths, model: str) -> Command:
  return Command("fedclf.export", (
      f"--run_dir={ch04_architectures.run_dir(paths, model)}",
      f"--model_name=mnist_{model}", f"--export_dir={paths.run(EXPORT_DIR)}",
      "--tfjs_examples=128", f"--out_dir={paths.run(RESULTS_DIR)}"))


def _tree(root: str) -> str:
  """The export folder as `tree` would list it, with file sizes."""
  lines = []
  for folder, dirs, files in os.walk(root):
    dirs.sort()
    rel = os.path.relpath(folder, root)
    depth = 0 if rel == "." else rel.count(os.sep) + 1
    lines.append("    " * depth + os.path.basename(folder) + "/")
    for name in sorted(files):
      size = os.path.getsize(os.path.join(folder, name))
      lines.append("    " * (depth + 1) + f"{name}  ({size / 1e3:,.1f} kB)")
  return "\n".join(lines)


def _serving_signature(cli_output: str) -> str:
  """The `serving_default` block of `saved_model_cli show --all`: what a
  TF Serving client sends and gets back."""
  lines = cli_output.splitlines()
  start = next(i for i, l in enumerate(lines)
               if l.startswith("signature_def['serving_default']"))
  end = next(i for i in range(start, len(lines))
             if lines[i].strip().startswith("Method name is"))
  return "\n".join([lines[0], ""] + lines[start:end + 1])


def compact_json(obj) -> str:
  """Indented JSON with short lists of scalars kept on one line."""
  text = json.dumps(obj, indent=2, sort_keys=True)
  return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                lambda m: "[" + ", ".join(
                    p.strip() for p in m.group(1).split(",\n")) + "]"
                if len(m.group(1)) < 200 else m.group(0), text)


def _export(ctx: core.Context) -> None:
  ctx.run_all([ch04_architectures.zoo_command(ctx.paths, m) for m in EXPORTED])
  commands = [export_command(ctx.paths, m) for m in EXPORTED]
  printed = [ctx.run(c) for c in commands]
  results = ctx.paths.run(RESULTS_DIR)
  ctx.write_output("ch08_commands.md", core.bash_block(commands))
  ctx.write_output("ch08_output.txt", "\n".join(p.strip() for p in printed))
  ctx.write_output("ch08_table.md", core.read_text(
      os.path.join(results, "table.md")))
  first = f"mnist_{EXPORTED[0]}"
  ctx.write_output("ch08_saved_model_cli.txt", _serving_signature(
      core.read_text(os.path.join(results, first, "saved_model_cli.txt"))))
  card = core.read_json(os.path.join(results, first, "model_card.json"))
  ctx.write_output("ch08_model_card.md",
                   "```json\n" + compact_json(card) + "\n```\n")
  ctx.write_output("ch08_tree.txt", _tree(
      os.path.join(ctx.paths.run(EXPORT_DIR), first)))


CHAPTER = core.Chapter(8, "08-deployment", "Deployment", (
    core.Step("ch08.export", ("outputs/ch08_commands.md",
                              "outputs/ch08_output.txt",
                              "outputs/ch08_table.md",
                              "outputs/ch08_saved_model_cli.txt",
                              "outputs/ch08_model_card.md",
                              "outputs/ch08_tree.txt"), _export,
              run_dirs=(EXPORT_DIR, RESULTS_DIR)),
))
