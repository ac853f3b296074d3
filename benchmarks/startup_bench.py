r"""Start-up benchmark: how long each binary takes to answer --list, --help
and --helpfull, now and at an earlier commit; writes results/startup.md.

  python -m benchmarks.startup_bench                  # against 45b25c3
  python -m benchmarks.startup_bench --base= --repeats=3   # no baseline

Each command runs in a fresh interpreter (`python -m <binary> <answer>`, as a
user types it), once to warm the file cache and then --repeats times; the
table gives the median wall time and the lines the first run wrote to
stderr. The baseline is the same commands in a copy of --base extracted with
`git archive` into a temporary folder (no git worktree, nothing in this
checkout changes). TF_CPP_MIN_LOG_LEVEL is unset for both, as for a user who
never set it. The machine may be shared: the file records the load average
before and after.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence, Tuple

from absl import flags

from fedclf import cli
from fedclf.results.record import atomic_write_text

BINARIES = ("simulations.federated", "simulations.ssl_pretrain",
            "simulations.domain_adaptation", "simulations.reproduce",
            "simulations.tables", "simulations.demo", "simulations.tff_worker",
            "baselines.centralized", "fedclf.export", "fedclf.interpret")

cli.define_common_flags()
flags.DEFINE_string("base", "45b25c3",
                    "Commit to compare with (empty: none).")
flags.DEFINE_list("binaries", list(BINARIES), "Binaries (python -m names).")
flags.DEFINE_list("base_binaries", list(BINARIES),
                  "Binaries timed at --base too (each takes seconds there).")
flags.DEFINE_list("answers", ["--list", "--help", "--helpfull"],
                  "Arguments timed, one command each.")
flags.DEFINE_list("base_answers", ["--list", "--help", "--helpfull"],
                  "Arguments timed at --base.")
flags.DEFINE_integer("repeats", 5, "Timed runs per command (median).")
flags.DEFINE_integer("base_repeats", 5, "Timed runs per command at --base.")
flags.DEFINE_string("out", "results/startup.md", "Markdown output.")

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NOTES = """\
At the base commit every answer imports TensorFlow and prints its 9
start-up lines (oneDNN, CUDA drivers twice, the cuDNN/cuFFT/cuBLAS "Unable to
register" errors, CPU instructions, TF-TRT); now none, and TensorFlow is not
imported (tests/cli/fast_start_test.py asserts both for every binary). The
tff_worker's one line for --list is its usage error: it has no --list, at
either commit. --helpfull now leaves out the 11 flags that TensorFlow's own
modules and absl.testing define (tensorflow.python.tpu.*, parallel_for.pfor,
absl.testing.absltest); a run still has them, as TensorFlow is imported
before flags parse. Everything else that --help, --helpfull and --list
print is unchanged for all ten binaries (compared with the output at the
base commit)."""

# (binary, answer) -> (median seconds, stderr lines of the first run).
Timings = Dict[Tuple[str, str], Tuple[float, int]]


def _command_env(checkout: str) -> Dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  env["PYTHONPATH"] = checkout
  return env


def time_command(checkout: str, args: Sequence[str],
                 repeats: int) -> Tuple[float, int]:
  """Median wall seconds of `python -m args` in `checkout` over `repeats`
  runs after a warm-up, and the warm-up's stderr line count."""
  env = _command_env(checkout)
  command = [sys.executable, "-m", *args]
  first = subprocess.run(command, cwd=checkout, env=env, capture_output=True,
                         text=True, timeout=600, check=False)
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    subprocess.run(command, cwd=checkout, env=env, capture_output=True,
                   timeout=600, check=False)
    seconds.append(time.perf_counter() - start)
  return statistics.median(seconds), len(first.stderr.splitlines())


def time_all(checkout: str, binaries: Sequence[str], answers: Sequence[str],
             repeats: int) -> Timings:
  timings = {}
  for binary in binaries:
    for answer in answers:
      timings[binary, answer] = time_command(checkout, [binary, answer],
                                             repeats)
      print(f"{checkout}: {binary} {answer}: {timings[binary, answer][0]:.2f}"
            f" s", file=sys.stderr, flush=True)
  return timings


def extract_commit(commit: str, folder: str) -> None:
  """The tree of `commit` into `folder` (git archive: no worktree)."""
  archive = subprocess.run(["git", "-C", ROOT, "archive", commit],
                           capture_output=True, check=True).stdout
  subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)


def _load() -> str:
  with open("/proc/loadavg") as f:
    return " ".join(f.read().split()[:3])


def _cell(timings: Timings, key: Tuple[str, str]) -> str:
  if key not in timings:
    return "-"
  seconds, lines = timings[key]
  return f"{seconds:.2f} s ({lines})"


def render(now: Timings, base: Timings, loads: Tuple[str, str]) -> str:
  """The Markdown section."""
  head = "| binary | answer | now | at " + (FLAGS.base or "-") + " |"
  lines = [
      "## Start-up: --list, --help, --helpfull", "",
      f"`python -m benchmarks.startup_bench` on {os.cpu_count()} cores; "
      f"median of {FLAGS.repeats} runs (at {FLAGS.base or '-'}: "
      f"{FLAGS.base_repeats}) after one warm-up, each a fresh "
      f"`python -m <binary> <answer>`; in brackets the lines it wrote to "
      f"stderr (TF_CPP_MIN_LOG_LEVEL unset); \"-\": not timed. Load average "
      f"(1/5/15 min) before: {loads[0]}; after: {loads[1]}.", "",
      head, "|---|---|---|---|"]
  for binary, answer in now:
    lines.append(f"| {binary} | {answer} | {_cell(now, (binary, answer))} "
                 f"| {_cell(base, (binary, answer))} |")
  return "\n".join(lines + ["", NOTES]) + "\n"


def main(argv: List[str]) -> None:
  del argv
  load_before = _load()
  now = time_all(ROOT, FLAGS.binaries, FLAGS.answers, FLAGS.repeats)
  base = {}
  if FLAGS.base:
    with tempfile.TemporaryDirectory(prefix="startup_base_") as folder:
      extract_commit(FLAGS.base, folder)
      base = time_all(folder, FLAGS.base_binaries, FLAGS.base_answers,
                      FLAGS.base_repeats)
  text = render(now, base, (load_before, _load()))
  atomic_write_text(FLAGS.out, text)
  print(text)


if __name__ == "__main__":
  cli.run(main)
