"""The one error type that the entry point shows to the user without a traceback."""


class UserError(Exception):
  """Bad input or an unusable environment: the message says what is wrong and what to do.

  Library code raises it for anything the user can fix (a missing data file, a batch size the
  replicas cannot split, no network for a download). trainer.main prints the message alone and
  exits with `exit_code`; any other exception is a bug and keeps its traceback.
  """

  exit_code = 2


class ClusterError(UserError):
  """A peer worker is unreachable or has died."""

  exit_code = 3
