"""Draws docs/architecture.png, the layer map of docs/architecture.md.

  python -m docs.architecture_diagram [--out=docs/architecture.png]

Boxes are layers (top: what a user runs; bottom: what everything uses);
an arrow means "calls / imports". Kept as code so the picture changes with
the text in one commit.
"""

from __future__ import annotations

import argparse
from typing import List, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib import patches  # pylint: disable=g-import-not-at-top

# (row, column, width, title, body) in grid units; row 0 is the top.
Box = Tuple[float, float, float, str, str]

BOXES: List[Box] = [
    (0, 0.0, 12.0, "binaries (absl flags -> config dataclasses)",
     "baselines.centralized   simulations.federated   simulations.ssl_pretrain"
     "   simulations.domain_adaptation (--mode)\nsimulations.reproduce / "
     "tables / demo / tff_worker   fedclf.export   fedclf.interpret      "
     "fedclf/cli.py + fedclf/plugin_config.py: flags made from plugins' "
     "params"),
    (1, 0.0, 5.9, "runs (set up one run, write its folder)",
     "train/centralized.py   ssl/pretraining_run.py   adapt/centralized_run"
     ".py\nfederated/simulation.py   adapt/unlabelled_target_clients.py\n"
     "results/run_reader.py: summary.json `kind` + final model"),
    (1, 6.1, 5.9, "the two engines (each written once)",
     "federated/round_loop.py: RoundLoop(RoundRunner, Evaluator)\n"
     "  runners: BackendRounds (algorithm on a backend), UdaRounds\n"
     "train/epoch_driver.py: epochs, checkpoint, resume, divergence, TB"),
    (2, 0.0, 12.0, "plugins (one file each, registered by name, params "
     "dataclass beside the factory)",
     "datasets   partitioners   models   algorithms (ClientWork + "
     "Aggregator + server optimizer)   backends (local | tff)\n"
     "objectives (supervised | self-supervised)   ssl methods   "
     "adaptation methods   federated adaptation methods"),
    (3, 0.0, 5.9, "backends",
     "federated/backends/local.py (in-process, clients batched in one "
     "graph)\nfederated/backends/tff.py + tff_context.py + tff_workers.py\n"
     "(TFF runtime, worker processes owned and stopped)"),
    (3, 6.1, 5.9, "foundation (imports nothing above it)",
     "registry.py (imports no fedclf module)   plugins.py (loading)\n"
     "errors.py   data/   metrics/   results/record.py (atomic files)"),
]

ARROWS = [((0, 3.0), (1, 3.0)), ((0, 9.0), (1, 9.0)), ((1, 5.9), (1, 6.1)),
          ((1, 3.0), (2, 3.0)), ((1, 9.0), (2, 9.0)), ((2, 3.0), (3, 3.0)),
          ((2, 9.0), (3, 9.0))]

ROW_HEIGHT = 1.6
BOX_HEIGHT = 1.15


def _y(row: float) -> float:
  return -row * ROW_HEIGHT


def draw(out: str) -> None:
  fig, ax = plt.subplots(figsize=(15, 8.2))
  for row, col, width, title, body in BOXES:
    y = _y(row)
    ax.add_patch(patches.FancyBboxPatch(
        (col, y - BOX_HEIGHT), width, BOX_HEIGHT,
        boxstyle="round,pad=0.02", linewidth=1.2, edgecolor="#33415c",
        facecolor="#eef2f9"))
    ax.text(col + 0.12, y - 0.12, title, fontsize=10.5, fontweight="bold",
            va="top", ha="left", color="#1b263b")
    ax.text(col + 0.12, y - 0.42, body, fontsize=8.2, va="top", ha="left",
            family="monospace", color="#1b263b")
  for (row_a, x_a), (row_b, x_b) in ARROWS:
    if row_a == row_b:  # Runs call the engines beside them.
      start = (x_a, _y(row_a) - BOX_HEIGHT / 2)
      end = (x_b, _y(row_b) - BOX_HEIGHT / 2)
    else:
      start = (x_a, _y(row_a) - BOX_HEIGHT)
      end = (x_b, _y(row_b))
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle="-|>", color="#5c677d", lw=1.4))
  ax.set_xlim(-0.2, 12.2)
  ax.set_ylim(_y(3) - BOX_HEIGHT - 0.2, 0.2)
  ax.axis("off")
  ax.set_title("fedclf: layers and what depends on what (arrows: calls / "
               "imports)", fontsize=12)
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default="docs/architecture.png")
  draw(parser.parse_args().out)


if __name__ == "__main__":
  main()
