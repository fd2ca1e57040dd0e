"""The outer training loop: compiled calls of the task, and the work each boundary asks for.

The controller sees the task only through `train_loop(num_steps)`, `train_metrics()`,
`reset_train_metrics()` and `evaluate()`, and the plan tells it where calls end, so the whole
loop is tested with a fake task in milliseconds (tests/test_controller.py). The order at a
call's end: divergence check, throughput, progress, training scalars (log points and epoch
ends); at an evaluation (every epoch's end, every --eval_every steps) its scalars and the best
model kept (--keep_best); then the checkpoint (inside the epoch, or at its end), which so always
follows the evaluation of its step.
A stop request (SIGTERM, Ctrl-C) is honoured before the next call, or between two chunks of an
evaluation: save, then raise; under multi-worker, a request to any worker stops all of them at
the same step. Since a stop may cut an evaluation short, a run resumed at an evaluation's step
runs that evaluation first. A second Ctrl-C stops at once (never inside a save) and says which
steps it lost. Under --steps_per_loop=auto, calls and evaluation chunks are sized from the
measured time of a step (schedule.steps_for_seconds), so all of this happens within seconds.
"""

import dataclasses
import math
import signal
import time
from typing import Callable, Dict, Optional

from trainer import errors
from trainer.loop import preemption
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


class _NoEvents:
  """The event log of a process that keeps none (records.events.EventLog's interface)."""

  def call(self, first_step: int, last_step: int, seconds: float,
           input_wait_seconds: float) -> None:
    pass

  def first_step(self, step: int, time_to_first_step_s: float) -> None:
    pass

  def checkpoint(self, step: int, seconds: float) -> None:
    pass

  def evaluation(self, step: int, seconds: float) -> None:
    pass


class _NoBest:
  """The best-model keeper of a run without --keep_best."""

  def consider(self, step: int, evaluation: Dict[str, float]) -> None:
    pass


class Controller:
  """Runs a LoopPlan's calls from a start step to the end of the run."""

  def __init__(self, task, plan: schedule.LoopPlan, meter, writer, checkpointer, progress,
               stop_requests, heartbeat: Callable[[], None] = lambda: None, profiler=None,
               best=None, events=None, clock: Callable[[], float] = time.perf_counter):
    self._task, self._plan, self._meter, self._writer = task, plan, meter, writer
    self._checkpointer, self._progress, self._stop = checkpointer, progress, stop_requests
    self._heartbeat = heartbeat
    self._profiler = profiler or _NoProfile()
    self._best = best or _NoBest()
    self._events = events or _NoEvents()
    self._clock = clock
    self._step = 0
    # The last evaluation chunk's start (clock, batches done) and its seconds per batch.
    self._chunk_started: Optional[float] = None
    self._chunk_from = 0
    self._seconds_per_batch: Optional[float] = None

  def run(self, start_step: int) -> Outcome:
    """Trains from `start_step` to the plan's last step; returns the final figures."""
    self._step = start_step
    try:
      return self._run(start_step)
    except preemption.StopNow:
      self._progress.break_line()
      last = self._checkpointer.last_step
      lost = (f"the {self._step - last} step{'s' if self._step - last != 1 else ''} trained "
              f"after it are lost" if self._step > last else "nothing trained is lost")
      raise errors.Interrupted(
          f"Stopped at once by a second Ctrl-C at step {self._step} of "
          f"{self._plan.total_steps}: the last checkpoint is step {last}, {lost}. Rerun the "
          "same command to resume from it.", signal.SIGINT) from None
    except BaseException:
      self._progress.break_line()  # The message that follows starts a line of its own.
      raise

  def _run(self, start_step: int) -> Outcome:
    step, first = start_step, True
    train_loss, evaluation = math.nan, None
    if 0 < step < self._plan.total_steps and self._plan.evaluates_at(step):
      # A stop may have cut this step's evaluation short; run it (again) before training on.
      with self._meter.paused():
        evaluation = self._evaluate_at(step, save=False)
    while step < self._plan.total_steps:
      if first or schedule.is_due(step, self._plan.steps_per_epoch):
        self._progress.start_epoch(self._plan.epoch_of(step))
      self._stop_if_requested(step)
      call = self._plan.next_call(step, first, self._meter.seconds_per_step)
      self._profiler.before_call(step)
      bad_step = self._timed_call(step, call)
      self._heartbeat()  # The loop above has finished: the compiled call returns a value.
      self._profiler.after_call(call.end_step)
      metrics = self._task.train_metrics()
      self._check_finite(step, call, bad_step, metrics["loss"])
      train_loss, step = metrics["loss"], call.end_step
      self._step = step
      self._meter.record(call.num_steps)
      if first:
        self._events.first_step(step, self._meter.time_to_first_step_s)
        first = False
      self._after_call(call, metrics)
      if call.evaluate:
        with self._meter.paused():
          evaluation = self._evaluate_at(step, save=call.epoch_end)
      if call.checkpoint:  # After the evaluation of this step, which a resume would not redo.
        self._save(call.end_step)
    if evaluation is None:  # Every step was already trained: a run stopped before its end.
      evaluation = self._evaluate(step)
    self._stop_if_requested(step)  # A signal during the last evaluation or save.
    return Outcome(step, train_loss, evaluation)

  def _timed_call(self, step: int, call: schedule.Call) -> int:
    """The task's call of steps step+1..call.end_step, logged with its seconds and its input
    wait (a diverged call too: its time was spent); returns train_loop's bad step."""
    started, waited = self._clock(), self._task.input_wait_s
    bad_step = self._task.train_loop(call.num_steps)
    self._events.call(step + 1, call.end_step, self._clock() - started,
                      self._task.input_wait_s - waited)
    return bad_step

  def _stop_if_requested(self, step: int) -> None:
    signal_number, here = self._agreed_stop()
    if signal_number:
      self._save(step)
      self._stop_saved(signal_number, here, step)

  def _agreed_stop(self):
    # Every worker asks at the same boundary, so all of them save the same step.
    return self._task.agreed_stop(self._stop.signal_number or 0)

  def _stop_saved(self, signal_number: int, here: bool, step: int, during: str = "") -> None:
    cause = f"signal {signal_number}" if here else "a signal to another worker"
    raise errors.Interrupted(
        f"Stopped by {cause}{during} and saved at step {step} of {self._plan.total_steps}. "
        "Rerun the same command to resume from there (on a cluster: on every worker).",
        signal_number)

  def _check_finite(self, step: int, call: schedule.Call, bad_step: int, loss: float) -> None:
    if bad_step or not math.isfinite(loss):
      what = (f"The training loss became {loss}" if not math.isfinite(loss) else
              f"The gradients became NaN or infinite (the loss was {loss:.4g})")
      raise errors.Diverged(
          f"{what} at step {step + (bad_step or call.num_steps)}. "
          f"Stopped without saving; the last good checkpoint (step "
          f"{self._checkpointer.last_step}) is kept. Lower --learning_rate, or use "
          "--precision=float32, and rerun the same command to resume from it.")

  def _after_call(self, call: schedule.Call, metrics: Dict[str, float]) -> None:
    step_in_epoch = (call.end_step - 1) % self._plan.steps_per_epoch + 1
    seconds_per_step = self._meter.seconds_per_step
    self._progress.update(step_in_epoch, metrics["loss"], metrics["accuracy"], call.log,
                          steps_per_sec=1 / seconds_per_step if seconds_per_step else None,
                          steps_left=self._plan.total_steps - call.end_step)
    if call.log:
      self._writer.scalars("train", call.end_step, {**metrics, **self._meter.end_window()})
      self._task.reset_train_metrics()

  def _evaluate_at(self, step: int, save: bool) -> Dict[str, float]:
    # The best model is kept before the checkpoint, which records it: a kill between the two
    # resumes before this evaluation, which then runs again on the same weights.
    evaluation = self._evaluate(step)
    self._writer.scalars("eval", step, evaluation)  # The last one over the whole test split.
    self._best.consider(step, evaluation)
    self._heartbeat()
    if save:
      self._save(step)
    if schedule.is_due(step, self._plan.steps_per_epoch):
      self._progress.end_epoch(evaluation["loss"], evaluation["accuracy"])
    return evaluation

  def _evaluate(self, step: int) -> Dict[str, float]:
    """The task's evaluation in chunks, stopped (saved, then raised) between two of them; the
    run's last covers the whole test split (--eval_steps limits only those before)."""
    started = self._clock()
    figures = self._task.evaluate(self._next_eval_chunk,
                                  whole_split=step >= self._plan.total_steps)
    self._events.evaluation(step, self._clock() - started)  # Cut short or not.
    if figures is None:  # A stop request cut it short; a resume here evaluates again.
      signal_number, here = self._agreed_stop()
      self._save(step)
      self._stop_saved(signal_number, here, step, " during an evaluation")
    self._heartbeat()
    return figures

  def _next_eval_chunk(self, batches_done: int) -> int:
    """How many test batches the next compiled chunk runs, from the last chunk's time; 0 stops."""
    now = self._clock()
    if batches_done and self._chunk_started is not None:
      self._seconds_per_batch = (now - self._chunk_started) / (batches_done - self._chunk_from)
    if batches_done and self._agreed_stop()[0]:
      return 0
    self._chunk_started, self._chunk_from = now, batches_done
    return schedule.steps_for_seconds(self._seconds_per_batch, 1, _MAX_EVAL_CHUNK)

  def _save(self, step: int) -> None:
    with self._stop.held():  # A second Ctrl-C waits for the checkpoint to be whole.
      started = self._clock()
      self._checkpointer.save(step)
      self._events.checkpoint(step, self._clock() - started)
    self._heartbeat()


# Test batches per evaluation call at most: a fast model's whole test split in a few calls.
_MAX_EVAL_CHUNK = 1000
