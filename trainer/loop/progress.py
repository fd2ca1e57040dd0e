"""What the chief prints while a run trains: an epoch header, progress, the test figures.

--progress=bar draws Keras's live bar (a terminal), lines prints one plain line per log window
(files, CI logs: no carriage returns), none prints only the epoch's test figures and the
summary; auto is bar on a terminal and lines otherwise.
"""

import sys

import keras


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

  def __init__(self, steps_per_epoch: int, epochs: int, mode: str, is_chief: bool = True):
    self._steps_per_epoch, self._epochs = steps_per_epoch, epochs
    self._mode = resolve_mode(mode, is_chief)
    self._chief = is_chief
    self._bar = None

  def start_epoch(self, epoch: int) -> None:
    """Prints the header of the 0-based `epoch` and starts its bar."""
    if not self._chief:
      return
    print(f"Epoch {epoch + 1}/{self._epochs}", flush=True)
    if self._mode == "bar":
      self._bar = keras.utils.Progbar(self._steps_per_epoch, verbose=1,
                                      stateful_metrics=["loss", "accuracy"])

  def update(self, step_in_epoch: int, loss: float, accuracy: float, logged: bool) -> None:
    """After a compiled call; `logged` when its end is a log point (lines mode prints there)."""
    if self._mode == "bar":
      self._bar.update(step_in_epoch, [("loss", loss), ("accuracy", accuracy)])
    elif self._mode == "lines" and logged:
      print(f"  step {step_in_epoch}/{self._steps_per_epoch}: loss {loss:.4f}, "
            f"accuracy {accuracy:.4f}", flush=True)

  def end_epoch(self, test_loss: float, test_accuracy: float) -> None:
    if self._chief:
      print(f"  test loss {test_loss:.4f}, test accuracy {test_accuracy:.4f}", flush=True)
