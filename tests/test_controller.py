"""The outer loop with a fake task: what happens at each boundary, in order, and how it stops."""

import math
import signal

import pytest

from trainer import errors
from trainer.loop import controller
from trainer.loop import schedule
from trainer.loop import throughput


class Recorder:
  """Collects every call the controller makes to its collaborators, in order."""

  def __init__(self):
    self.events = []


class FakeTask:

  def __init__(self, recorder, losses=None, on_call=None):
    self._recorder, self._losses, self._on_call = recorder, losses or {}, on_call
    self.calls = 0

  def train_loop(self, num_steps):
    self.calls += 1
    self._recorder.events.append(("train", num_steps))
    if self._on_call:
      self._on_call(self.calls)
    return self._losses.get(self.calls, (0, 0.5))[0]

  def train_metrics(self):
    return {"loss": self._losses.get(self.calls, (0, 0.5))[1], "accuracy": 0.75}

  def reset_train_metrics(self):
    pass

  def agreed_stop(self, local_signal):
    return local_signal, bool(local_signal)

  def evaluate(self):
    self._recorder.events.append(("evaluate",))
    return {"loss": 0.25, "accuracy": 0.9}


class FakeWriter:

  def __init__(self, recorder):
    self._recorder = recorder

  def scalars(self, writer, step, values):
    self._recorder.events.append((f"{writer} scalars", step))


class FakeCheckpointer:

  def __init__(self, recorder):
    self._recorder, self.last_step = recorder, 0

  def save(self, step):
    self._recorder.events.append(("save", step))
    self.last_step = step


class FakeProgress:

  def __init__(self, recorder):
    self._recorder = recorder

  def start_epoch(self, epoch):
    self._recorder.events.append(("epoch", epoch))

  def update(self, step_in_epoch, loss, accuracy, logged):
    pass

  def end_epoch(self, test_loss, test_accuracy):
    pass


class FakeStopRequests:
  signal_number = None


class FakeProfiler:

  def __init__(self, recorder):
    self._recorder = recorder

  def before_call(self, step):
    self._recorder.events.append(("before call", step))

  def after_call(self, end_step):
    self._recorder.events.append(("after call", end_step))


class FakeBest:

  def __init__(self, recorder):
    self._recorder = recorder

  def consider(self, step, evaluation):
    self._recorder.events.append(("best?", step))


def run(plan, start_step=0, losses=None, on_call=None, stop=None, profile=False, best=False):
  recorder = Recorder()
  task = FakeTask(recorder, losses, on_call)
  loop = controller.Controller(
      task, plan, throughput.ThroughputMeter(8, 0.0), FakeWriter(recorder),
      FakeCheckpointer(recorder), FakeProgress(recorder), stop or FakeStopRequests(),
      profiler=FakeProfiler(recorder) if profile else None,
      best=FakeBest(recorder) if best else None)
  return recorder, loop, lambda: loop.run(start_step)


PLAN = schedule.LoopPlan(steps_per_epoch=4, epochs=2, log_every=2, checkpoint_every=3,
                         steps_per_loop=10)


def test_each_boundary_does_its_work_in_order():
  recorder, _, go = run(PLAN)
  outcome = go()
  # Calls end at 1, 2 (log), 3 (checkpoint), 4 (epoch end), 6 (log and checkpoint), 8 (end).
  assert recorder.events == [
      ("epoch", 0), ("train", 1), ("train", 1), ("train scalars", 2), ("train", 1), ("save", 3),
      ("train", 1), ("train scalars", 4), ("evaluate",), ("eval scalars", 4), ("save", 4),
      ("epoch", 1), ("train", 2), ("train scalars", 6), ("save", 6),
      ("train", 2), ("train scalars", 8), ("evaluate",), ("eval scalars", 8), ("save", 8)]
  assert outcome == controller.Outcome(step=8, train_loss=0.5,
                                       evaluation={"loss": 0.25, "accuracy": 0.9})
  assert (outcome.test_loss, outcome.test_accuracy) == (0.25, 0.9)


def test_eval_every_evaluates_inside_epochs_and_the_best_is_kept_before_the_checkpoint():
  plan = schedule.LoopPlan(steps_per_epoch=6, epochs=1, log_every=6, checkpoint_every=4,
                           steps_per_loop=10, eval_every=2)
  recorder, _, go = run(plan, best=True)
  go()
  # Steps 2 and 4 evaluate inside the epoch; step 6 ends it. Each checkpoint comes after its
  # step's evaluation and best model: a resume from it must not skip that evaluation.
  assert recorder.events == [
      ("epoch", 0), ("train", 1), ("train", 1), ("evaluate",), ("eval scalars", 2),
      ("best?", 2), ("train", 2), ("evaluate",), ("eval scalars", 4), ("best?", 4),
      ("save", 4), ("train", 2), ("train scalars", 6), ("evaluate",), ("eval scalars", 6),
      ("best?", 6), ("save", 6)]


def test_a_resumed_run_starts_inside_its_epoch():
  recorder, _, go = run(PLAN, start_step=6)
  go()
  assert recorder.events == [("epoch", 1), ("train", 1), ("train", 1), ("train scalars", 8),
                             ("evaluate",), ("eval scalars", 8), ("save", 8)]


def test_a_run_whose_steps_are_all_trained_only_evaluates():
  recorder, _, go = run(PLAN, start_step=8)
  assert go().test_accuracy == 0.9
  assert recorder.events == [("evaluate",)]


def test_sigterm_saves_at_the_next_boundary_and_stops():
  stop = FakeStopRequests()

  def signal_during_second_call(call_number):
    if call_number == 2:
      stop.signal_number = signal.SIGTERM

  recorder, _, go = run(PLAN, on_call=signal_during_second_call, stop=stop)
  with pytest.raises(errors.Interrupted, match="signal 15 and saved at step 2 of 8") as raised:
    go()
  assert raised.value.exit_code == 143
  assert recorder.events[-3:] == [("train", 1), ("train scalars", 2), ("save", 2)]
  assert [event for event in recorder.events if event[0] == "train"] == [("train", 1)] * 2


def test_a_non_finite_loss_names_its_step_and_saves_nothing_more():
  recorder, _, go = run(PLAN, losses={3: (1, math.nan)})  # The third call's first step.
  with pytest.raises(errors.Diverged, match=r"became nan at step 3\. .*checkpoint \(step 0\)"):
    go()
  assert [event for event in recorder.events if event[0] == "save"] == []


def test_the_profiler_brackets_each_call_with_its_global_steps():
  plan = schedule.LoopPlan(steps_per_epoch=4, epochs=2, log_every=4, checkpoint_every=0,
                           steps_per_loop=10, profile_steps=(3, 5))
  recorder, _, go = run(plan, profile=True)
  go()
  calls = [event for event in recorder.events if event[0] in ("before call", "after call")]
  # Calls end after step 2 and step 5 (B), so the window is exactly steps 3 to 5.
  assert calls[:8] == [("before call", 0), ("after call", 1), ("before call", 1),
                       ("after call", 2), ("before call", 2), ("after call", 4),
                       ("before call", 4), ("after call", 5)]
