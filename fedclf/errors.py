"""User-facing errors.

Binaries turn any `UserError` (and registry errors) into a one-line message
and exit status 2; everything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
  """Bad input from the user: flags, sizes, files. The message is one line."""


class DataFileError(UserError):
  """A data file is missing, corrupt or has an unexpected checksum."""


class DivergenceError(UserError):
  """Training produced NaN or Inf; state written so far is kept."""
