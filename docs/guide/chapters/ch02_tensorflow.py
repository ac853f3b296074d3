"""Chapter 2: TensorFlow essentials as fedclf uses them."""

from __future__ import annotations

import os

import numpy as np

from docs.guide import core
from docs.guide.core import Command

SNIPPETS = ("tf_data", "gradient_tape", "tf_function", "distribute",
            "tff_basics")
BACKENDS = ("local", "tff")


def snippet_command(name: str) -> Command:
  return Command(f"docs.guide.snippets.{name}", ())


def backend_command(paths: core.Paths, backend: str) -> Command:
  return Command("simulations.federated", (
      "--dataset=digits", "--model=mlp", "--algorithm=fedavg",
      "--num_clients=10", "--clients_per_round=5", "--rounds=3",
      "--local_epochs=1", "--local_batch_size=16", "--client_lr=0.1",
      "--per_client_eval=0", f"--backend={backend}",
      f"--out_dir={paths.run('ch02', f'fedavg_{backend}')}"))


def _snippet_step(name: str) -> core.Step:
  def build(ctx: core.Context) -> None:
    command = snippet_command(name)
    ctx.write_output(f"ch02_{name}.txt", ctx.run(command))
    ctx.write_output(f"ch02_{name}_command.md", core.bash_block([command]))
  return core.Step(f"ch02.{name}", (f"outputs/ch02_{name}.txt",
                                    f"outputs/ch02_{name}_command.md"), build)


def _final_weights(run_dir: str):
  from fedclf.federated.rounds import Checkpointer  # pylint: disable=g-import-not-at-top
  data = np.load(Checkpointer(os.path.join(run_dir, "checkpoints")).latest())
  return [data[k] for k in sorted(data.files) if k.startswith("trainable/")]


def _backends(ctx: core.Context) -> None:
  commands = [backend_command(ctx.paths, b) for b in BACKENDS]
  printed = [ctx.run(c) for c in commands]
  rows = []
  for backend, command in zip(BACKENDS, commands):
    s = core.read_json(os.path.join(command.out_dir(), "summary.json"))
    rows.append([f"`{backend}`", f"{s['final_test_accuracy']:.4f}",
                 f"{s['final_test_loss']:.4f}", f"{s['train_seconds']:.1f}"])
  local, tff = (_final_weights(c.out_dir()) for c in commands)
  difference = max(float(np.max(np.abs(a - b))) for a, b in zip(local, tff))
  ctx.write_output("ch02_backends_command.md", core.bash_block(commands))
  ctx.write_output("ch02_backends_output.txt",
                   "\n".join(p.strip() for p in printed))
  ctx.write_output("ch02_backends.md", core.markdown_table(
      ["backend", "test accuracy", "test loss", "train seconds"], rows) +
      f"\nLargest difference between the two runs' final weights: "
      f"{difference:.2e} (float32 rounding; "
      f"{sum(w.size for w in local):,} weights).\n")


CHAPTER = core.Chapter(2, "02-tensorflow", "TensorFlow essentials", (
    *(_snippet_step(name) for name in SNIPPETS),
    core.Step("ch02.backends", ("outputs/ch02_backends_command.md",
                                "outputs/ch02_backends_output.txt",
                                "outputs/ch02_backends.md"), _backends,
              run_dirs=tuple(f"ch02/fedavg_{b}" for b in BACKENDS)),
))
