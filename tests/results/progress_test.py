"""Progress lines: ETA arithmetic, resumed starts, the live bar on a
terminal and plain lines elsewhere, grid counts (fake clock, fake stream)."""

import io
import logging

import pytest

from fedclf.results.progress import duration_text
from fedclf.results.progress import eta_seconds
from fedclf.results.progress import GridProgress
from fedclf.results.progress import Step
from fedclf.results.progress import StepProgress


class FakeClock:

  def __init__(self, now=1000.0):
    self.now = now

  def __call__(self):
    return self.now


def _progress(total, done_at_start=0, tty=False, width=60):
  clock, lines, stream = FakeClock(), [], io.StringIO()
  progress = StepProgress("round", total, done_at_start, stream=stream,
                          tty=tty, clock=clock, log_line=lines.append,
                          width=width)
  return progress, clock, lines, stream


def test_duration_text():
  assert [duration_text(s) for s in (None, -3, 0, 42.4, 60, 845, 3600,
                                     11_220)] == [
                                         "?", "0s", "0s", "42s", "1m00s",
                                         "14m05s", "1h00m", "3h07m"]


def test_eta_is_the_mean_step_time_of_this_process_times_steps_left():
  assert eta_seconds(10.0, 0, 5) is None
  assert eta_seconds(10.0, 2, 5) == 25.0
  assert eta_seconds(10.0, 2, 0) == 0.0


def test_plain_lines_one_per_step_with_metrics_throughput_and_eta():
  progress, clock, lines, stream = _progress(total=4)
  clock.now += 2.0
  progress.step(Step(1, ["clients 5/5", "loss 0.5000"], 1.5, 300))
  clock.now += 4.0
  progress.step(Step(2, ["loss 0.2500", "test_acc 0.9000"], 2.0))
  progress.close()
  assert lines == [
      "round 1/4 (25%)  clients 5/5  loss 0.5000  1.5s  200 ex/s  "
      "elapsed 2s  ETA 6s",
      # Two rounds left at 4 s, the second's time (the first traced).
      "round 2/4 (50%)  loss 0.2500  test_acc 0.9000  2.0s  elapsed 6s  "
      "ETA 8s"]
  assert stream.getvalue() == ""  # nothing drawn off a terminal


def test_the_first_step_leaves_the_mean_once_a_second_is_done():
  progress, clock, _, _ = _progress(total=10)
  clock.now += 30.0  # the first round traces the model
  progress.step(Step(1))
  assert progress.eta() == 270.0  # nothing better known yet
  for done in (2, 3):
    clock.now += 2.0
    progress.step(Step(done))
  assert progress.eta() == 14.0  # 7 rounds left at 2 s, not at 34/3 s


def test_a_resumed_run_does_not_count_restored_steps_as_instant():
  progress, clock, lines, _ = _progress(total=10, done_at_start=8)
  clock.now += 30.0
  progress.step(Step(9, ["loss 0.1"], 30.0))
  assert progress.eta() == 30.0  # not 3 s, as 9 steps in 30 s would say
  assert lines[0].startswith("round 9/10 (90%)  loss 0.1  30.0s")
  assert lines[0].endswith("elapsed 30s  ETA 30s")


def test_zero_steps_left_report_nothing():
  progress, _, lines, stream = _progress(total=3, done_at_start=3,
                                         tty=True)
  progress.close()
  assert lines == [] and stream.getvalue() == ""
  empty, _, lines, _ = _progress(total=0)
  assert empty.percent() == 100.0 and empty.eta() is None


def test_one_step_run_ends_with_eta_zero():
  progress, clock, lines, _ = _progress(total=1)
  clock.now += 5.0
  progress.step(Step(1, [], 5.0))
  assert lines == ["round 1/1 (100%)  5.0s  elapsed 5s  ETA 0s"]


def test_terminal_bar_rewrites_one_line_and_is_cleared_at_the_end():
  progress, clock, lines, stream = _progress(total=4, tty=True, width=100)
  for done in (1, 2):
    clock.now += 10.0
    progress.step(Step(done, ["loss 0.5000"], 10.0, 500))
  drawn = stream.getvalue()
  assert "\n" not in drawn and drawn.count("\r") == 2
  bars = [b.replace("\033[K", "") for b in drawn.split("\r")[1:]]
  assert bars[0] == ("round 1/4 [" + "#" * 9 + "." * 29 + "]  "
                     "25%  loss 0.5000  50 ex/s  elapsed 10s  ETA 30s")
  assert bars[1].startswith("round 2/4 [" + "#" * 19 + "." * 19 + "]")
  assert bars[1].endswith("50%  loss 0.5000  50 ex/s  elapsed 20s  ETA 20s")
  assert all(len(b) == 99 for b in bars)  # one column short of the width
  assert lines == []  # no plain lines while the bar is live
  progress.close()
  assert stream.getvalue().endswith("\r\033[K")
  # The bar gives way to the last step's plain line.
  assert lines == ["round 2/4 (50%)  loss 0.5000  10.0s  50 ex/s  "
                   "elapsed 20s  ETA 20s"]


@pytest.mark.parametrize("width, shown", [
    (80, "[###...........]  25%  loss 0.5000  test_acc 0.9000  50 ex/s  "
         "ETA 30s"),
    (60, "[#####...............]  25%  loss 0.5000  ETA 30s"),
    (45, "[####..............]  25%  ETA 30s"),
    (30, "25%  ETA 30s"),  # too narrow for a bar
])
def test_a_narrower_terminal_drops_details_but_keeps_percent_and_eta(
    width, shown):
  progress, clock, _, stream = _progress(total=4, tty=True, width=width)
  clock.now += 10.0
  progress.step(Step(1, ["loss 0.5000", "test_acc 0.9000"], 10.0, 500))
  text = stream.getvalue().replace("\033[K", "").lstrip("\r")
  assert text == f"round 1/4 {shown}" and len(text) < width


def test_tty_is_decided_from_the_stream_unless_forced():
  assert not StepProgress("epoch", 2, stream=io.StringIO()).tty

  class Terminal(io.StringIO):

    def isatty(self):
      return True

  assert StepProgress("epoch", 2, stream=Terminal()).tty
  assert not StepProgress("epoch", 2, stream=Terminal(), tty=False).tty


def test_other_log_records_clear_the_bar_first():
  handler = logging.StreamHandler(io.StringIO())
  root = logging.getLogger()
  root.addHandler(handler)
  try:
    progress, _, _, stream = _progress(total=4, tty=True)
    progress.step(Step(1, [], 1.0))
    logging.getLogger("elsewhere").warning("a checkpoint was saved")
    assert stream.getvalue().endswith("\r\033[K")  # cleared before it
    progress.close()
    assert not handler.filters  # stops watching at the end
  finally:
    root.removeHandler(handler)


def test_grid_line_counts_done_failed_running_and_left():
  clock = FakeClock()
  grid = GridProgress(12, clock=clock)
  grid.skip()  # finished by an earlier invocation: no time
  grid.start()
  assert grid.line() == "grid: 1/12 done, 1 running, 10 left, ETA ?"
  clock.now += 60.0
  grid.finish(failed=True)
  grid.start()
  clock.now += 120.0
  grid.finish()
  grid.start()
  clock.now += 1.0
  grid.finish(timed=False)  # another process had it
  # Mean 90 s over the two runs timed here, nine left.
  assert grid.line() == ("grid: 4/12 done (1 failed), 0 running, 8 left, "
                         "ETA 12m00s")
  grid.start()
  assert grid.line() == ("grid: 4/12 done (1 failed), 1 running, 7 left, "
                         "ETA 12m00s")


@pytest.mark.parametrize("total", [1, 3])
def test_grid_of_only_finished_runs_has_no_eta(total):
  grid = GridProgress(total, clock=FakeClock())
  for _ in range(total):
    grid.skip()
  assert grid.line() == f"grid: {total}/{total} done, 0 running, 0 left, ETA ?"
