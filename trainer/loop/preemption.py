"""SIGTERM (how preemption arrives) and SIGINT (Ctrl-C) as requests to stop at a step boundary."""

import contextlib
import signal
from typing import Iterator, Optional

from trainer import errors


class StopNow(KeyboardInterrupt):
  """A second Ctrl-C: stop at once, without waiting for the next boundary or saving."""


class StopRequests:
  """While entered, the first SIGTERM or SIGINT is recorded instead of killing the process.

  The training loop polls `signal_number` between loop calls (and between evaluation chunks),
  saves, and exits. A second Ctrl-C raises StopNow at once, for when the user does not want to
  wait; inside `held()` (a checkpoint being written) it waits for the block's end, so no
  checkpoint is left half-written.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signal_number: Optional[int] = None
    self._previous = {}
    self._holding = False
    self._stop_now_pending = False

  def _record(self, signal_number, frame):
    del frame  # Unused.
    if signal_number == signal.SIGINT and self.signal_number == signal.SIGINT:
      if self._holding:
        self._stop_now_pending = True
        return
      errors.note_interrupting_signal(signal_number)
      raise StopNow()
    if self.signal_number is None:
      self.signal_number = signal_number

  @contextlib.contextmanager
  def held(self) -> Iterator[None]:
    """Defers a second Ctrl-C that arrives inside to the block's end."""
    self._holding = True
    try:
      yield
    finally:
      self._holding = False
    if self._stop_now_pending:
      errors.note_interrupting_signal(signal.SIGINT)
      raise StopNow()

  def __enter__(self) -> "StopRequests":
    # A signal that arrived before the loop but whose KeyboardInterrupt was swallowed (raised
    # inside a gc callback or a finalizer) is a request like any other: stop at the first
    # boundary.
    self.signal_number = errors.interrupting_signal()
    for sig in self.SIGNALS:
      self._previous[sig] = signal.signal(sig, self._record)
    return self

  def __exit__(self, *exc_info) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
