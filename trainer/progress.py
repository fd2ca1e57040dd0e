"""What the chief prints while a run trains: an epoch header, a progress bar, the test figures."""

import keras


class EpochProgress:
  """Keras's progress bar, one per epoch; silent on every process but the chief."""

  def __init__(self, steps_per_epoch: int, epochs: int, enabled: bool):
    self._steps_per_epoch, self._epochs, self._enabled = steps_per_epoch, epochs, enabled
    self._bar = None

  def start_epoch(self, epoch: int) -> None:
    """Prints the header of the 0-based `epoch` and starts its bar."""
    self._bar = keras.utils.Progbar(self._steps_per_epoch, verbose=1 if self._enabled else 0,
                                    stateful_metrics=["loss", "accuracy"])
    if self._enabled:
      print(f"Epoch {epoch + 1}/{self._epochs}", flush=True)

  def update(self, step_in_epoch: int, loss: float, accuracy: float) -> None:
    self._bar.update(step_in_epoch, [("loss", loss), ("accuracy", accuracy)])

  def end_epoch(self, test_loss: float, test_accuracy: float) -> None:
    if self._enabled:
      print(f"  test loss {test_loss:.4f}, test accuracy {test_accuracy:.4f}", flush=True)
