"""The outer training loop: compiled calls of the task, and the work each boundary asks for.

The controller sees the task only through `train_loop(num_steps)`, `train_metrics()`,
`reset_train_metrics()` and `evaluate()`, and the plan tells it where calls end, so the whole
loop is tested with a fake task in milliseconds (tests/test_controller.py). The order at a
call's end: divergence check, throughput, progress, training scalars (log points and epoch
ends); at an evaluation (every epoch's end, every --eval_every steps) its scalars and the best
model kept (--keep_best); then the checkpoint (inside the epoch, or at its end), which so always
follows the evaluation of its step.
A stop request (SIGTERM, Ctrl-C) is honoured before the next call: save, then raise; under
multi-worker, a request to any worker stops all of them at the same step.
"""

import dataclasses
import math
from typing import Callable, Dict

from trainer import errors
from trainer.loop import schedule


@dataclasses.dataclass(frozen=True)
class Outcome:
  """Where the loop ended and the last figures it saw."""

  step: int
  train_loss: float
  evaluation: Dict[str, float]  # The task's last evaluate(): loss, accuracy[, *_ema].

  @property
  def test_loss(self) -> float:
    return self.evaluation["loss"]

  @property
  def test_accuracy(self) -> float:
    return self.evaluation["accuracy"]


class _NoProfile:
  """The profiler of a run without --profile_steps."""

  def before_call(self, step: int) -> None:
    pass

  def after_call(self, end_step: int) -> None:
    pass


class _NoBest:
  """The best-model keeper of a run without --keep_best."""

  def consider(self, step: int, evaluation: Dict[str, float]) -> None:
    pass


class Controller:
  """Runs a LoopPlan's calls from a start step to the end of the run."""

  def __init__(self, task, plan: schedule.LoopPlan, meter, writer, checkpointer, progress,
               stop_requests, heartbeat: Callable[[], None] = lambda: None, profiler=None,
               best=None):
    self._task, self._plan, self._meter, self._writer = task, plan, meter, writer
    self._checkpointer, self._progress, self._stop = checkpointer, progress, stop_requests
    self._heartbeat = heartbeat
    self._profiler = profiler or _NoProfile()
    self._best = best or _NoBest()

  def run(self, start_step: int) -> Outcome:
    """Trains from `start_step` to the plan's last step; returns the final figures."""
    step, first = start_step, True
    train_loss, evaluation = math.nan, None
    while step < self._plan.total_steps:
      if first or schedule.is_due(step, self._plan.steps_per_epoch):
        self._progress.start_epoch(self._plan.epoch_of(step))
      self._stop_if_requested(step)
      call = self._plan.next_call(step, first)
      self._profiler.before_call(step)
      bad_step = self._task.train_loop(call.num_steps)
      self._heartbeat()  # The loop above has finished: the compiled call returns a value.
      self._profiler.after_call(call.end_step)
      metrics = self._task.train_metrics()
      self._check_finite(step, call, bad_step, metrics["loss"])
      train_loss, step, first = metrics["loss"], call.end_step, False
      self._meter.record(call.num_steps)
      self._after_call(call, metrics)
      if call.evaluate:
        with self._meter.paused():
          evaluation = self._evaluate_at(step, call.epoch_end)
      if call.checkpoint:  # After the evaluation of this step, which a resume would not redo.
        self._save(call.end_step)
    if evaluation is None:  # Every step was already trained: a run stopped before its end.
      evaluation = self._evaluate()
    self._stop_if_requested(step)  # A signal during the last evaluation or save.
    return Outcome(step, train_loss, evaluation)

  def _stop_if_requested(self, step: int) -> None:
    # Every worker asks at the same boundary, so all of them save the same step.
    signal_number, here = self._task.agreed_stop(self._stop.signal_number or 0)
    if signal_number:
      self._save(step)
      cause = f"signal {signal_number}" if here else "a signal to another worker"
      raise errors.Interrupted(
          f"Stopped by {cause} and saved at step {step} of {self._plan.total_steps}. Rerun "
          "the same command to resume from there (on a cluster: on every worker).",
          signal_number)

  def _check_finite(self, step: int, call: schedule.Call, bad_step: int, loss: float) -> None:
    if bad_step or not math.isfinite(loss):
      raise errors.Diverged(
          f"The training loss became {loss} at step {step + (bad_step or call.num_steps)}. "
          f"Stopped without saving; the last good checkpoint (step "
          f"{self._checkpointer.last_step}) is kept. Lower --learning_rate, or use "
          "--precision=float32, and rerun the same command to resume from it.")

  def _after_call(self, call: schedule.Call, metrics: Dict[str, float]) -> None:
    step_in_epoch = (call.end_step - 1) % self._plan.steps_per_epoch + 1
    self._progress.update(step_in_epoch, metrics["loss"], metrics["accuracy"], call.log)
    if call.log:
      self._writer.scalars("train", call.end_step, {**metrics, **self._meter.end_window()})
      self._task.reset_train_metrics()

  def _evaluate_at(self, step: int, epoch_end: bool) -> Dict[str, float]:
    # The best model is kept before the checkpoint, which records it: a kill between the two
    # resumes before this evaluation, which then runs again on the same weights.
    evaluation = self._evaluate()
    self._writer.scalars("eval", step, evaluation)
    self._best.consider(step, evaluation)
    self._heartbeat()
    if epoch_end:
      self._save(step)
      self._progress.end_epoch(evaluation["loss"], evaluation["accuracy"])
    return evaluation

  def _evaluate(self) -> Dict[str, float]:
    figures = self._task.evaluate()
    self._heartbeat()
    return figures

  def _save(self, step: int) -> None:
    self._checkpointer.save(step)
    self._heartbeat()
