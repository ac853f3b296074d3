"""Executes the guide's notebooks top to bottom with nbclient, as a reader's
Jupyter would: one fresh kernel per notebook, started in the notebook's
folder, with the settings and work folder passed in its environment.

The kernel is the Python that runs this (Jupyter's `python3` kernel is
ipykernel on `sys.executable` when ipykernel is importable), so
`make install` is all the setup it needs. A cell that raises fails the run
with the chapter, the cell's number and first line, and the error.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict

import nbclient
import nbformat

from docs.guide import core

KERNEL = "python3"
# A cell may train several models; generous, the test budget is elsewhere.
CELL_TIMEOUT_S = 1800


class NotebookCellError(core.GuideBuildError):
  """A notebook's cell raised; the message names the notebook and cell."""


@dataclasses.dataclass(frozen=True)
class Execution:
  """How to run notebooks: settings and where their files go.

  small: FEDCLF_GUIDE_SMALL=1 (core.SMALL_CAPS) in the kernel.
  work_dir: FEDCLF_GUIDE_NOTEBOOK_DIR, the notebooks' runs and outputs.
  executed_dir: where each executed notebook is saved, outputs included
    ("" = not saved).
  """
  small: bool
  work_dir: str
  executed_dir: str = ""
  cell_timeout_s: int = CELL_TIMEOUT_S


def kernel_env(execution: Execution) -> Dict[str, str]:
  env = dict(os.environ, FEDCLF_GUIDE_SMALL="1" if execution.small else "0",
             FEDCLF_GUIDE_NOTEBOOK_DIR=os.path.abspath(execution.work_dir))
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # The kernel runs with the repository root first on its path (the
  # notebook's setup cell adds it too, for a reader's Jupyter).
  root = os.path.dirname(os.path.dirname(core.GUIDE_DIR))
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (root, env.get("PYTHONPATH", "")) if p)
  return env


def _failed_cell(notebook: nbformat.NotebookNode, path: str) -> str:
  """'<notebook> cell N (`first line`): Error: message' for the first cell
  whose outputs hold an error."""
  for k, cell in enumerate(notebook.cells):
    errors = [o for o in cell.get("outputs", ())
              if o.get("output_type") == "error"]
    if errors:
      first = (cell.source.strip().splitlines() or [""])[0][:80]
      return (f"{os.path.basename(path)} cell {k} (`{first}`): "
              f"{errors[0]['ename']}: {errors[0]['evalue'][:300]}")
  return f"{os.path.basename(path)}: the kernel failed"


def execute(path: str, execution: Execution) -> float:
  """Runs the notebook at `path`; returns its wall seconds."""
  notebook = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(
      notebook, timeout=execution.cell_timeout_s, kernel_name=KERNEL,
      resources={"metadata": {"path": os.path.dirname(os.path.abspath(
          path))}})
  start = time.time()
  try:
    client.execute(env=kernel_env(execution))
  except (nbclient.exceptions.CellExecutionError,
          nbclient.exceptions.CellTimeoutError,
          nbclient.exceptions.DeadKernelError) as e:
    raise NotebookCellError(_failed_cell(notebook, path) if isinstance(
        e, nbclient.exceptions.CellExecutionError) else
                            f"{os.path.basename(path)}: {e}") from None
  finally:
    if execution.executed_dir:
      os.makedirs(execution.executed_dir, exist_ok=True)
      nbformat.write(notebook, os.path.join(execution.executed_dir,
                                            os.path.basename(path)))
  return time.time() - start
