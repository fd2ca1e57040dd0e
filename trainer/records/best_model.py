"""--keep_best: the model of the best evaluation so far, under WORKDIR/best/.

  WORKDIR/best/  model.keras  saved_model/  best.json (step, test_accuracy, test_loss)

The best value and its step live in the run's checkpoint, so a resumed run compares with the
best before the kill. best/ is written whole into best.tmp/ and swapped in by renames: a crash
leaves the previous best/ (or, for an instant between the renames, best.old/, which the next
write clears) and never half of one.
"""

import math
import os
import shutil
from typing import Callable, Dict, Optional

import tensorflow as tf

from trainer import safe_files
from trainer.records import workdir as workdir_lib

BEST_FILE = "best.json"


class BestModel(tf.Module):
  """Keeps the exports of the best evaluation by `metric` ("accuracy" or "loss"); with `ema`,
  the moving average's figures decide (its weights are the ones exported). Create it under the
  strategy's scope; every worker calls `consider` with the same figures, the chief writes."""

  def __init__(self, workdir: str, metric: str, ema: bool, is_chief: bool,
               write_exports: Callable[[str], None]):
    super().__init__(name="best_model")
    self._folder = os.path.join(workdir, workdir_lib.BEST_DIR)
    self._suffix = "_ema" if ema else ""
    self._metric, self._is_chief, self._write_exports = metric, is_chief, write_exports
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_step")
    self.accuracy = tf.Variable(-math.inf, dtype=tf.float64, trainable=False,
                                name="best_accuracy")
    self.loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_loss")

  def _value(self, accuracy: float, loss: float) -> float:
    return accuracy if self._metric == "accuracy" else loss

  def consider(self, step: int, evaluation: Dict[str, float]) -> None:
    """Keeps the model now under best/ if `evaluation` beats the best so far."""
    accuracy = evaluation["accuracy" + self._suffix]
    loss = evaluation["loss" + self._suffix]
    value = self._value(accuracy, loss)
    best = self._value(float(self.accuracy.numpy()), float(self.loss.numpy()))
    if not math.isfinite(value) or not (value > best if self._metric == "accuracy"
                                        else value < best):
      return
    if self._is_chief:
      self._write(step, accuracy, loss)
    self.step.assign(step)
    self.accuracy.assign(accuracy)
    self.loss.assign(loss)

  def results(self) -> Dict[str, Optional[float]]:
    """results.json's best_step, best_test_accuracy and best_test_loss (None before any)."""
    step = int(self.step.numpy())
    if not step:
      return {"best_step": None, "best_test_accuracy": None, "best_test_loss": None}
    return {"best_step": step, "best_test_accuracy": float(self.accuracy.numpy()),
            "best_test_loss": float(self.loss.numpy())}

  def _write(self, step: int, accuracy: float, loss: float) -> None:
    staging, old = self._folder + ".tmp", self._folder + ".old"
    for leftover in (staging, old):
      shutil.rmtree(leftover, ignore_errors=True)
    with safe_files.writing(f"best model of step {step}", self._folder, partial=[staging]):
      os.makedirs(staging)
      self._write_exports(staging)
      safe_files.write_json(os.path.join(staging, BEST_FILE), {
          "step": step, "metric": self._metric + self._suffix,
          "test_accuracy": accuracy, "test_loss": loss})
      if os.path.isdir(self._folder):
        os.replace(self._folder, old)
      os.replace(staging, self._folder)
      shutil.rmtree(old, ignore_errors=True)
