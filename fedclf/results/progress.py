"""Progress of long runs: steps done, throughput and time left.

`StepProgress` reports every training loop's steps (the round loop of the
federated binaries, `fedclf.federated.round_loop`, and the epoch driver of
the centralized ones, `fedclf.train.epoch_driver`): after each step, the
steps done of the total, the percent, the step's metrics, examples/s, the
time elapsed and the ETA. `GridProgress` counts the runs of a grid
(`fedclf.results.grid`).

ETAs come from the mean wall time of the steps (runs) done in this process
only: a resumed run's restored steps took no time here, and counting them
would make the rest look instant. A loop's first step, which holds
TensorFlow's tracing, leaves the mean once a second step is done.

Two output styles, chosen once per `StepProgress`:
- on a terminal (the stream is a TTY), one live line, a bar that each step
  redraws in place (`\\r`) and that the end clears, leaving the last step's
  plain line; any other log record clears the bar first, so it never ends
  up glued to the bar;
- elsewhere (logs, pipes, files), one plain absl log line per step, so
  `... 2>&1 | cat` and log files stay readable line by line.

Pure Python (no TensorFlow), so that it can be tested with a fake clock
and a fake stream.
"""

from __future__ import annotations

import dataclasses
import logging as std_logging
import shutil
import sys
import time
from typing import Callable, List, Optional, Sequence, TextIO

from absl import logging

Clock = Callable[[], float]
LogLine = Callable[[str], None]

# The narrowest bar worth drawing; a narrower terminal gets no bar.
_MIN_BAR = 10
# Erases from the cursor to the end of the line (ANSI, every terminal).
_CLEAR_LINE = "\033[K"


def duration_text(seconds: Optional[float]) -> str:
  """'42s', '14m05s', '3h07m'; '?' when not known yet."""
  if seconds is None:
    return "?"
  seconds = max(0, int(round(seconds)))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta_seconds(elapsed: float, done_here: int,
                left: int) -> Optional[float]:
  """Time left for `left` steps at the mean time of the `done_here` steps
  done in `elapsed` seconds by this process; None before the first."""
  if done_here <= 0:
    return None
  return elapsed / done_here * max(left, 0)


def _log_info(text: str) -> None:
  logging.info("%s", text)


@dataclasses.dataclass(frozen=True)
class Step:
  """What one finished step reports.

  Attributes:
    done: steps done in all (restored ones included) after this one.
    metrics: the step's key metrics, each already formatted ("loss 0.1234").
    seconds: the step's own training time (shown as the existing log lines
      did; the ETA uses wall time between steps instead).
    examples: examples the step trained on (0: no examples/s shown).
  """
  done: int
  metrics: Sequence[str] = ()
  seconds: float = 0.0
  examples: float = 0.0


class StepProgress:
  """Reports the steps ("round", "epoch") of one loop; `close` at the end.

  Usable as a context manager, which closes it.
  """

  def __init__(self, unit: str, total: int, done_at_start: int = 0,
               stream: Optional[TextIO] = None, tty: Optional[bool] = None,
               clock: Clock = time.monotonic, log_line: LogLine = _log_info,
               width: Optional[int] = None):
    """Args:
      unit: names the steps in the lines ("round", "federated dann round",
        "pretrain: epoch").
      total: the last step.
      done_at_start: steps already done (restored by a resume).
      stream: where the live bar goes (None: sys.stderr, as absl logs).
      tty: draw the live bar (None: whether `stream` is a terminal).
      clock: seconds, monotonic (tests pass a fake).
      log_line: writes one plain line (absl's info log by default).
      width: the bar line's width (None: the terminal's, at each draw).
    """
    self.unit, self.total = unit, total
    self.done_at_start = self.done = done_at_start
    self.stream = stream if stream is not None else sys.stderr
    self.tty = _is_tty(self.stream) if tty is None else tty
    self.clock, self.log_line, self.width = clock, log_line, width
    self.started = self._first_done = clock()
    self._last_line: Optional[str] = None
    self._bar_shown = False
    self._filter = _ClearBarFilter(self) if self.tty else None
    if self._filter is not None:
      for handler in std_logging.getLogger().handlers:
        handler.addFilter(self._filter)

  def __enter__(self) -> "StepProgress":
    return self

  def __exit__(self, *unused_exc) -> None:
    self.close()

  def eta(self) -> Optional[float]:
    """Seconds left at this process's mean step time; None before a step.

    From the second step on, the first is left out of the mean: it holds
    TensorFlow's tracing (a tiny federated run: 4.5 s, then 0.4 s a round),
    which would make the early ETAs several times too long.
    """
    done_here, left = self.done - self.done_at_start, self.total - self.done
    if done_here >= 2:
      return eta_seconds(self.clock() - self._first_done, done_here - 1, left)
    return eta_seconds(self.clock() - self.started, done_here, left)

  def percent(self) -> float:
    return 100.0 * self.done / self.total if self.total > 0 else 100.0

  def step(self, step: Step) -> None:
    """Reports a finished step: a plain line, or the bar redrawn."""
    if self.done == self.done_at_start:
      self._first_done = self.clock()
    self.done = step.done
    self._last_line = self.line(step)
    if self.tty:
      self._draw(step)
    else:
      self.log_line(self._last_line)

  def line(self, step: Step) -> str:
    """The plain line of `step` ("round 3/20 (15%)  loss 0.2  1.2s  ...")."""
    parts = [f"{self.unit} {step.done}/{self.total} ({self.percent():.0f}%)",
             *step.metrics, f"{step.seconds:.1f}s"]
    if step.examples and step.seconds > 0:
      parts.append(f"{step.examples / step.seconds:.0f} ex/s")
    parts += [f"elapsed {self._elapsed_text()}",
              f"ETA {duration_text(self.eta())}"]
    return "  ".join(parts)

  def bar_line(self, step: Step, columns: int) -> str:
    """The live line of `step`, at most `columns - 1` characters (a full
    line would wrap on some terminals)."""
    head = f"{self.unit} {step.done}/{self.total} "
    # A narrow terminal drops from the end: elapsed, ex/s, the metrics
    # from the last; the percent and the ETA stay.
    optional = list(step.metrics)
    if step.examples and step.seconds > 0:
      optional.append(f"{step.examples / step.seconds:.0f} ex/s")
    optional.append(f"elapsed {self._elapsed_text()}")
    while True:
      tail = "  ".join([f" {self.percent():3.0f}%", *optional,
                        f"ETA {duration_text(self.eta())}"])
      room = columns - 1 - len(head) - len(tail) - 2
      if room >= _MIN_BAR or not optional:
        break
      optional.pop()
    if room < _MIN_BAR:
      return (head + tail.lstrip())[:max(columns - 1, 0)]
    filled = int(room * self.done / self.total) if self.total > 0 else room
    return f"{head}[{'#' * filled}{'.' * (room - filled)}]{tail}"

  def close(self) -> None:
    """Clears the bar, leaving the last step's plain line (on a terminal),
    and stops watching other log records."""
    if self._filter is not None:
      for handler in std_logging.getLogger().handlers:
        handler.removeFilter(self._filter)
      self._filter = None
      self.clear()
      if self._last_line is not None:
        self.log_line(self._last_line)

  def clear(self) -> None:
    """Erases the bar if it is shown (before anything else is written)."""
    if self._bar_shown:
      self._bar_shown = False
      self._write(f"\r{_CLEAR_LINE}")

  def _elapsed_text(self) -> str:
    return duration_text(self.clock() - self.started)

  def _draw(self, step: Step) -> None:
    columns = self.width or shutil.get_terminal_size().columns
    self._bar_shown = True
    self._write(f"\r{self.bar_line(step, columns)}{_CLEAR_LINE}")

  def _write(self, text: str) -> None:
    try:
      self.stream.write(text)
      self.stream.flush()
    except (OSError, ValueError):
      pass  # A closed terminal must not stop the training.


def _is_tty(stream: TextIO) -> bool:
  try:
    return stream.isatty()
  except (AttributeError, ValueError):  # a stand-in, or a closed stream
    return False


class _ClearBarFilter(std_logging.Filter):
  """Clears the live bar before any other log record is written (lets
  every record through)."""

  def __init__(self, progress: StepProgress):
    super().__init__()
    self.progress = progress

  def filter(self, record: std_logging.LogRecord) -> bool:
    self.progress.clear()
    return True


class GridProgress:
  """Counts a grid's runs: "grid: 3/12 done (1 failed), 1 running, 8 left,
  ETA 14m05s". Runs skipped as already finished count as done, not into the
  mean run time; neither do runs that another process had (they return at
  once)."""

  def __init__(self, total: int, clock: Clock = time.monotonic):
    self.total, self.clock = total, clock
    self.done = self.failed = self.running = 0
    self.run_seconds: List[float] = []
    self._started = 0.0

  def skip(self) -> None:
    """A run found finished: done, no time."""
    self.done += 1

  def start(self) -> None:
    self.running += 1
    self._started = self.clock()

  def finish(self, failed: bool = False, timed: bool = True) -> None:
    """The running run ended; `timed`: its wall time counts into the
    mean (it ran here)."""
    self.running -= 1
    self.done += 1
    self.failed += int(failed)
    if timed:
      self.run_seconds.append(self.clock() - self._started)

  def eta(self) -> Optional[float]:
    left = self.total - self.done
    return eta_seconds(sum(self.run_seconds), len(self.run_seconds), left)

  def line(self) -> str:
    failed = f" ({self.failed} failed)" if self.failed else ""
    left = self.total - self.done - self.running
    return (f"grid: {self.done}/{self.total} done{failed}, {self.running} "
            f"running, {left} left, ETA {duration_text(self.eta())}")
