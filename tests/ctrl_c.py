"""A recorder stand-in that presses Ctrl-C during a run, for resume tests."""


class CtrlCAt:
  """Raises KeyboardInterrupt when epoch `epoch`'s row is logged: that
  epoch has trained but is not checkpointed yet, as in a kill mid-run."""

  def __init__(self, epoch):
    self.epoch = epoch

  def log_metrics(self, step, metrics, step_name):
    del metrics, step_name
    if step == self.epoch:
      raise KeyboardInterrupt
