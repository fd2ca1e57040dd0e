"""What the chief prints while a run trains: an epoch header, progress, the test figures.

--progress=bar draws Keras's live bar (a terminal), lines prints one plain line per log window
(files, CI logs: no carriage returns), none prints only the epoch's test figures and the
summary; auto is bar on a terminal and lines otherwise. A line also comes after a process's
first call and whenever LINE_SECONDS pass without one, so a slow model shows that it runs, its
steps/s and the time left, however far apart its log points are.
"""

import sys
import time
from typing import Callable, Optional

import keras

LINE_SECONDS = 30.0  # The longest a lines-mode console stays silent while training.


def duration(seconds: float) -> str:
  """A span for a person: 45s, 12m05s, 3h02m."""
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def resolve_mode(mode: str, is_chief: bool, stream=None) -> str:
  """The mode that runs: auto resolved against the output stream; none off the chief."""
  if not is_chief:
    return "none"
  if mode == "auto":
    stream = stream or sys.stdout
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"
  return mode


class EpochProgress:
  """Progress of one epoch after another, in a config.PROGRESS mode."""

  def __init__(self, steps_per_epoch: int, epochs: int, mode: str, is_chief: bool = True,
               clock: Callable[[], float] = time.monotonic):
    self._steps_per_epoch, self._epochs = steps_per_epoch, epochs
    self._mode = resolve_mode(mode, is_chief)
    self._chief = is_chief
    self._bar = None
    self._bar_open = False  # The bar's line is unfinished: a message must start a new one.
    self._clock = clock
    self._last_line: Optional[float] = None  # When lines mode last printed (None: not yet).

  def start_epoch(self, epoch: int) -> None:
    """Prints the header of the 0-based `epoch` and starts its bar."""
    if not self._chief:
      return
    self.break_line()
    print(f"Epoch {epoch + 1}/{self._epochs}", flush=True)
    if self._mode == "bar":
      self._bar = keras.utils.Progbar(self._steps_per_epoch, verbose=1,
                                      stateful_metrics=["loss", "accuracy"])

  def update(self, step_in_epoch: int, loss: float, accuracy: float, logged: bool,
             steps_per_sec: Optional[float] = None, steps_left: Optional[int] = None) -> None:
    """After a compiled call; `logged` when its end is a log point (lines mode prints there,
    after the first call, and after LINE_SECONDS of silence)."""
    if self._mode == "bar":
      self._bar.update(step_in_epoch, [("loss", loss), ("accuracy", accuracy)])
      self._bar_open = step_in_epoch < self._steps_per_epoch
    elif self._mode == "lines":
      now = self._clock()
      if logged or self._last_line is None or now - self._last_line >= LINE_SECONDS:
        self._last_line = now
        rate = ""
        if steps_per_sec:
          rate = f", {steps_per_sec:.3g} steps/s"
          if steps_left is not None:
            rate += f", {duration(steps_left / steps_per_sec)} of training left"
        print(f"  step {step_in_epoch}/{self._steps_per_epoch}: loss {loss:.4f}, "
              f"accuracy {accuracy:.4f}{rate}", flush=True)

  def break_line(self) -> None:
    """Ends a live bar's unfinished line, so what is printed next starts its own."""
    if self._bar_open:
      print(flush=True)
      self._bar_open = False

  def end_epoch(self, test_loss: float, test_accuracy: float) -> None:
    if self._chief:
      print(f"  test loss {test_loss:.4f}, test accuracy {test_accuracy:.4f}", flush=True)
