"""User-facing errors.

Binaries turn any `UserError` (and registry errors) into a one-line message
and exit status 2; everything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
  """Bad input from the user: flags, sizes, files. The message is one line."""


class DataFileError(UserError):
  """A data file is missing, corrupt or has an unexpected checksum."""


class UnreadableCheckpointError(UserError):
  """A checkpoint cannot be read: truncated, garbled or missing a file.
  Resuming skips it for the previous one (see
  `fedclf.results.checkpoint_setting`)."""


class DivergenceError(UserError):
  """Training produced NaN or Inf; state written so far is kept."""


def is_interrupt(error: BaseException) -> bool:
  """Whether `error` is a Ctrl-C. One that lands inside a TensorFlow op (a
  tf.data iterator, say) can surface as pybind11's RuntimeError "MISMATCH
  of original and normalized active exception types ... REPLACED BY
  KeyboardInterrupt" instead of the KeyboardInterrupt itself."""
  return isinstance(error, KeyboardInterrupt) or (
      isinstance(error, RuntimeError) and "KeyboardInterrupt" in str(error))
