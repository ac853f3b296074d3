"""Starts `simulations.tff_worker` the way users start remote workers, for
the tests that need one outside the test process."""

import contextlib
import os
import subprocess
import sys
from typing import Dict, Iterator, Optional, Tuple

import portpicker

from fedclf.federated.backends import tff_workers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def launched_worker(extra_env: Optional[Dict[str, str]] = None,
                    timeout_s: float = 180
                    ) -> Iterator[Tuple[subprocess.Popen, int, str]]:
  """Yields (process, port, its first line of output) once it serves; stops
  it with Ctrl-C (killing it if that takes over 10 s) on the way out."""
  port = portpicker.pick_unused_port()
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(extra_env or {}))
  proc = subprocess.Popen(
      [sys.executable, "-m", "simulations.tff_worker", f"--port={port}"],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
      text=True)
  try:
    tff_workers.wait_until_ready(f"localhost:{port}", timeout_s=timeout_s)
    yield proc, port, proc.stdout.readline()
  finally:
    # The same stop as for workers fedclf owns, with a longer grace.
    tff_workers.WorkerProcess(proc, port, log_path=None,
                              delete_log=False).stop(grace_s=10)
    proc.stdout.close()
