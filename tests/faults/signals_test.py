"""SIGTERM and a closed output pipe end a binary's run like Ctrl-C: with a
checkpoint, exit 143 / 141, no traceback.

All binaries share this through `fedclf.cli.run`, so one binary is run
here; the epoch driver's side is tests/train/epoch_driver_test.py. SIGTERM
on the TFF backend (its worker stopped): interrupt_test.py; Ctrl-C:
tests/binaries/binaries_test.py. `make faults` sends every signal to every
binary and resumes.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from fedclf import errors
from tests.binary_batch import start_binary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
FEDERATED = ["simulations.federated", "--dataset=digits", "--model=mlp",
             "--num_clients=6", "--clients_per_round=2",
             "--per_client_eval=0", "--seed=5"]
# Long enough that nothing but the interrupt ends it within the test.
ENDLESS = "--rounds=100000"


@pytest.mark.parametrize("raised, cls, code", [
    (KeyboardInterrupt(), KeyboardInterrupt, 130),
    (errors.Terminated(), errors.Terminated, 143),
    (errors.OutputClosed(), errors.OutputClosed, 141),
    # An interrupt raised by a signal handler inside a TensorFlow op comes
    # back as pybind11's RuntimeError naming its type.
    (RuntimeError("MISMATCH of original and normalized active exception "
                  "types: ORIGINAL _NotOkStatusException REPLACED BY "
                  "KeyboardInterrupt"), KeyboardInterrupt, 130),
    (RuntimeError("MISMATCH of original and normalized active exception "
                  "types: ORIGINAL _NotOkStatusException REPLACED BY "
                  "Terminated: "), errors.Terminated, 143),
])
def test_interrupts_keep_their_type_and_exit_status(raised, cls, code):
  assert errors.is_interrupt(raised)
  interrupt = errors.as_interrupt(raised)
  assert type(interrupt) is cls
  assert errors.interrupt_exit_code(interrupt) == code


def test_other_runtime_errors_are_not_interrupts():
  assert not errors.is_interrupt(RuntimeError("Terminated by the OS"))
  assert not errors.is_interrupt(ValueError("KeyboardInterrupt"))


def start(module_and_flags, out_dir, *extra, stdout=subprocess.DEVNULL,
          stderr=subprocess.PIPE):
  module, *flags = module_and_flags
  return start_binary(module, [*flags, f"--out_dir={out_dir}", *extra],
                      stdout=stdout, stderr=stderr)


def wait_for(path, process, timeout_s=300):
  deadline = time.monotonic() + timeout_s
  while not path.exists() and process.poll() is None and (
      time.monotonic() < deadline):
    time.sleep(0.05)
  assert path.exists(), f"no {path.name} (exit {process.poll()})"


def checkpoints(out_dir):
  return sorted(p.name for p in (out_dir / "checkpoints").glob("round_*.npz"))


def test_closed_output_pipe_checkpoints_and_exits_141(tmp_path):
  out = tmp_path / "run"
  # `... 2>&1 | head -1`: the reader takes one line and goes.
  run = start(FEDERATED, out, ENDLESS, "--checkpoint_every=1000",
              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  # As `| head -N` with N past the first round's log line: there is a
  # round to save (at `| head -1` the run stops before training).
  while not (out / "metrics.jsonl").exists():
    assert run.stdout.readline(), f"exit {run.wait()} before a round"
  run.stdout.close()
  closed_at = time.monotonic()
  assert run.wait(timeout=120) == 141
  # Stopped by the pipe at its next log line, not by its 100000 rounds.
  assert time.monotonic() - closed_at < 120
  assert checkpoints(out), "no checkpoint when the output closed"


# A stand-in for a grid's training binary (given as the grid's `python`, it
# ignores the `-m binary --flags` it is called with): like a real run, it
# saves for a while on SIGTERM, then exits 143.
FAKE_RUN = """#!{python}
import signal, sys, time
def on_sigterm(signum, frame):
    time.sleep(1)  # the checkpoint save
    open({stopped!r}, "w").write("checkpoint")
    sys.exit(143)
signal.signal(signal.SIGTERM, on_sigterm)
signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the grid is signalled
print("running", flush=True)
time.sleep(600)
"""
GRID = """import sys
from fedclf import errors, process_exit
from fedclf.results import grid
process_exit.install()
try:
    grid.run_grid(grid.load_spec(sys.argv[1]), python=sys.argv[2])
except KeyboardInterrupt as e:
    sys.exit(errors.interrupt_exit_code(e))
"""


def test_interrupted_grid_stops_its_run_cleanly_first(tmp_path):
  for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
    stopped = tmp_path / f"stopped_{code}"
    fake = tmp_path / f"fake_{code}"
    fake.write_text(FAKE_RUN.format(python=sys.executable,
                                    stopped=str(stopped)))
    fake.chmod(0o755)
    spec = tmp_path / f"spec_{code}.yaml"
    spec.write_text(f"binary: simulations.federated\nout_dir: "
                    f"{tmp_path / str(code)}\ngrid: {{seed: [0, 1]}}\n")
    grid = subprocess.Popen([sys.executable, "-c", GRID, str(spec), str(fake)],
                            cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert grid.stdout.readline() == "running\n"
    grid.send_signal(signum)
    _, err = grid.communicate(timeout=60)
    assert grid.returncode == code, err[-3000:]
    # The run saved before the grid exited; the second run never started.
    assert stopped.read_text() == "checkpoint"
    assert "Traceback" not in err, err[-3000:]
