"""Recorders that press Ctrl-C during a run, for resume tests."""

from fedclf.results import RunRecorder


class CtrlCAt:
  """Raises KeyboardInterrupt when epoch `epoch`'s row is logged: that
  epoch has trained but is not checkpointed yet, as in a kill mid-run."""

  def __init__(self, epoch):
    self.epoch = epoch

  def log_metrics(self, step, metrics, step_name):
    del metrics, step_name
    if step == self.epoch:
      raise KeyboardInterrupt


class CtrlCAfterRow(RunRecorder):
  """A real recorder in `out_dir` that raises KeyboardInterrupt just after
  writing the row of epoch `epoch` of the stage whose metrics carry
  `metric_prefix`: the row is in metrics.jsonl, the epoch's checkpoint is
  not, as in a kill between the two."""

  def __init__(self, out_dir, epoch, metric_prefix=""):
    super().__init__(str(out_dir), {})
    self.epoch = epoch
    self.marker = f"{metric_prefix}epoch_seconds"

  def log_metrics(self, step, metrics, step_name="step"):
    super().log_metrics(step, metrics, step_name)
    if step_name == "epoch" and step == self.epoch and self.marker in metrics:
      raise KeyboardInterrupt


def rows_without_clock(recorder):
  """`recorder`'s rows less the wall-clock fields, which differ between
  runs (wall_seconds and every stage's epoch_seconds)."""
  return [{k: v for k, v in row.items()
           if k != "wall_seconds" and not k.endswith("epoch_seconds")}
          for row in recorder.read_metrics()]
