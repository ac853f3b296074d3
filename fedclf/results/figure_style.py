"""The one look of every figure written into a results folder.

Every plot function of fedclf/results and fedclf/metrics draws inside
`results_figure`, so accuracy curves, client box plots and confusion
matrices share fonts, grid, colours, resolution and legend placement.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Tuple

from fedclf.results.record import atomic_output

# matplotlib rcParams applied while a results figure is drawn and saved.
RESULTS_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.framealpha": 0.9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.6,
    "savefig.dpi": 120,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.1,
    "image.cmap": "Blues",
}

# The colour cycle's length (matplotlib's default "tab10"). A figure with
# more series than that (a grid's table: 40 settings) repeats the colours
# with the next line style, so no two series look alike.
COLORS = 10
SERIES_LINESTYLES = ("-", "--", ":", "-.")


def series_style(index: int) -> dict:
  """Colour and line style of the `index`-th series of a figure: the 10
  colours solid, then dashed, dotted and dash-dotted (40 distinct)."""
  return {"color": f"C{index % COLORS}",
          "linestyle": SERIES_LINESTYLES[
              (index // COLORS) % len(SERIES_LINESTYLES)]}


# More curves than this and the legend leaves the axes (to their right):
# inside, it would hide the curves' ends, where the results are.
MAX_LEGEND_ENTRIES_INSIDE = 3


@contextlib.contextmanager
def results_figure(path: str, size: Tuple[float, float]) -> Iterator:
  """Yields a matplotlib Figure drawn in RESULTS_STYLE and writes it to
  `path` (PNG, atomically, creating the folder) when the block ends."""
  # Imported lazily and used without pyplot: importing matplotlib is slow,
  # and pyplot's global backend/figure state would leak into callers.
  import matplotlib  # pylint: disable=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  with matplotlib.rc_context(RESULTS_STYLE):
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    yield fig
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with atomic_output(path) as tmp:
      fig.savefig(tmp, format="png")


def place_legend(ax, entries: int) -> None:
  """A legend inside the axes for a few entries, right of them for many."""
  if entries == 0:
    return
  if entries <= MAX_LEGEND_ENTRIES_INSIDE:
    ax.legend(loc="best")
  else:
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0),
              borderaxespad=0.0)
