"""SIGTERM (how preemption arrives) and SIGINT (Ctrl-C) as requests to stop at a step boundary."""

import signal
from typing import Optional


class StopRequests:
  """While entered, the first SIGTERM or SIGINT is recorded instead of killing the process.

  The training loop polls `signal_number` between loop calls, saves, and exits. A second Ctrl-C
  acts at once, as usual, for when the user does not want to wait.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signal_number: Optional[int] = None
    self._previous = {}

  def _record(self, signal_number, frame):
    del frame  # Unused.
    self.signal_number = signal_number
    signal.signal(signal.SIGINT, signal.default_int_handler)

  def __enter__(self) -> "StopRequests":
    for sig in self.SIGNALS:
      self._previous[sig] = signal.signal(sig, self._record)
    return self

  def __exit__(self, *exc_info) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
