"""The outer loop with a fake task: what happens at each boundary, in order, and how it stops."""

import contextlib
import itertools
import math
import signal

import pytest

from trainer import errors
from trainer.loop import controller
from trainer.loop import preemption
from trainer.loop import schedule
from trainer.loop import throughput
from trainer.records import events as events_lib
from trainer.records import goodput


class Recorder:
  """Collects every call the controller makes to its collaborators, in order."""

  def __init__(self):
    self.events = []


class FakeTask:

  def __init__(self, recorder, losses=None, on_call=None):
    self._recorder, self._losses, self._on_call = recorder, losses or {}, on_call
    self.calls = 0
    self.whole_split = []  # Of each evaluation: whether it covered the whole test split.
    self.input_wait_s = 0.0

  def train_loop(self, num_steps):
    self.calls += 1
    self.input_wait_s += 0.25  # Each call waits a quarter of a second for its batches.
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

  def evaluate(self, next_chunk=None, whole_split=False):
    # Three chunks of test batches, asked for as the real task asks.
    self._recorder.events.append(("evaluate",))
    self.whole_split.append(whole_split)
    done = 0
    while next_chunk is not None and done < 3:
      size = next_chunk(done)
      if not size:
        self._recorder.events.append(("evaluation abandoned", done))
        return None
      done += 1
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

  def update(self, step_in_epoch, loss, accuracy, logged, steps_per_sec=None, steps_left=None):
    pass

  def end_epoch(self, test_loss, test_accuracy):
    pass

  def break_line(self):
    self._recorder.events.append(("line broken",))


class FakeStopRequests:
  signal_number = None

  @contextlib.contextmanager
  def held(self):
    yield


class FakeProfiler:

  def __init__(self, recorder):
    self._recorder = recorder

  def before_call(self, step):
    self._recorder.events.append(("before call", step))

  def after_call(self, end_step):
    self._recorder.events.append(("after call", end_step))


class FakeEvents:

  def __init__(self, recorder):
    self._recorder = recorder

  def call(self, first_step, last_step, seconds, input_wait_seconds):
    self._recorder.events.append(("logged call", first_step, last_step, seconds,
                                  input_wait_seconds))

  def first_step(self, step, time_to_first_step_s):
    self._recorder.events.append(("logged first step", step))

  def checkpoint(self, step, seconds):
    self._recorder.events.append(("logged checkpoint", step, seconds))

  def evaluation(self, step, seconds):
    self._recorder.events.append(("logged evaluation", step))


class FakeBest:

  def __init__(self, recorder):
    self._recorder = recorder

  def consider(self, step, evaluation):
    self._recorder.events.append(("best?", step))


def run(plan, start_step=0, losses=None, on_call=None, stop=None, profile=False, best=False,
        events=None, clock=None):
  recorder = Recorder()
  task = FakeTask(recorder, losses, on_call)
  loop = controller.Controller(
      task, plan, throughput.ThroughputMeter(8, 0.0), FakeWriter(recorder),
      FakeCheckpointer(recorder), FakeProgress(recorder), stop or FakeStopRequests(),
      profiler=FakeProfiler(recorder) if profile else None,
      best=FakeBest(recorder) if best else None,
      events=FakeEvents(recorder) if events is True else events,
      **({"clock": clock} if clock else {}))
  recorder.task = task
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


def test_only_the_runs_last_evaluation_covers_the_whole_test_split():
  recorder, _, go = run(PLAN)
  go()
  assert recorder.task.whole_split == [False, True]  # Epoch 1's end (--eval_steps), the run's.
  recorder, _, go = run(PLAN, start_step=8)  # A finished run's evaluation: the last one.
  go()
  assert recorder.task.whole_split == [True]


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
  # The stop message that follows starts a line of its own.
  assert recorder.events[-4:] == [("train", 1), ("train scalars", 2), ("save", 2),
                                  ("line broken",)]
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


def test_a_stop_between_evaluation_chunks_saves_and_the_resume_evaluates_that_step_first():
  stop = FakeStopRequests()

  def signal_in_epoch_end_call(call_number):
    if call_number == 4:  # Steps 3 to 4: the epoch's last call; its evaluation comes next.
      stop.signal_number = signal.SIGINT

  recorder, _, go = run(PLAN, on_call=signal_in_epoch_end_call, stop=stop)
  with pytest.raises(errors.Interrupted, match="during an evaluation and saved at step 4 of 8"):
    go()
  assert recorder.events[-4:] == [("evaluate",), ("evaluation abandoned", 1), ("save", 4),
                                  ("line broken",)]
  resumed, _, go_on = run(PLAN, start_step=4)
  go_on()
  assert resumed.events[:4] == [("evaluate",), ("eval scalars", 4), ("epoch", 1), ("train", 1)]


def test_a_second_ctrl_c_stops_at_once_and_names_the_steps_it_loses():
  recorder = Recorder()

  def second_ctrl_c(call_number):
    if call_number == 5:  # Steps 4 to 6; the last checkpoint is step 4 (the epoch's end).
      raise preemption.StopNow()

  loop = controller.Controller(
      FakeTask(recorder, on_call=second_ctrl_c), PLAN, throughput.ThroughputMeter(8, 0.0),
      FakeWriter(recorder), FakeCheckpointer(recorder), FakeProgress(recorder),
      FakeStopRequests())
  with pytest.raises(errors.Interrupted, match=r"second Ctrl-C at step 4 of 8: the last "
                     r"checkpoint is step 4, nothing trained is lost") as raised:
    loop.run(0)
  assert raised.value.exit_code == 130
  assert recorder.events[-1] == ("line broken",)

  def ctrl_c_later(call_number):
    if call_number == 2:  # Steps 1 to 2, after a first call; no checkpoint yet.
      raise preemption.StopNow()

  loop = controller.Controller(
      FakeTask(Recorder(), on_call=ctrl_c_later), PLAN, throughput.ThroughputMeter(8, 0.0),
      FakeWriter(Recorder()), FakeCheckpointer(Recorder()), FakeProgress(Recorder()),
      FakeStopRequests())
  with pytest.raises(errors.Interrupted, match="at step 1 of 8: the last checkpoint is step 0, "
                     "the 1 step trained after it are lost"):
    loop.run(0)


def test_auto_sized_calls_follow_the_measured_step_time():
  # A model of 0.4 s a step on a fake clock: after the compiling first call and one measured
  # call, each call runs the steps of about AUTO_CALL_SECONDS.
  now = [0.0]
  recorder = Recorder()

  class SlowTask(FakeTask):

    def train_loop(self, num_steps):
      now[0] += 0.4 * num_steps + (30.0 if not self.calls else 0.0)
      return super().train_loop(num_steps)

  plan = schedule.LoopPlan(steps_per_epoch=40, epochs=1, log_every=40, checkpoint_every=0,
                           steps_per_loop=100, timed=True)
  loop = controller.Controller(
      SlowTask(recorder), plan, throughput.ThroughputMeter(8, 0.0, clock=lambda: now[0],
                                                           wall_clock=lambda: now[0]),
      FakeWriter(recorder), FakeCheckpointer(recorder), FakeProgress(recorder),
      FakeStopRequests(), clock=lambda: now[0])
  loop.run(0)
  sizes = [event[1] for event in recorder.events if event[0] == "train"]
  assert sizes[:3] == [1, 1, 3] and sum(sizes) == 40
  assert max(0.4 * size for size in sizes) <= schedule.AUTO_CALL_SECONDS


def ticks(step=1.0):
  """A clock that moves `step` seconds at every read."""
  counter = itertools.count()
  return lambda: step * next(counter)


def test_each_call_checkpoint_and_evaluation_is_logged_with_the_time_of_its_own_work():
  recorder, _, go = run(PLAN, events=True, clock=ticks())
  go()
  logged = [event for event in recorder.events if event[0].startswith("logged")]
  calls = [event[1:] for event in logged if event[0] == "logged call"]
  # Steps first..last, one clock tick (the call alone), the input wait the call added.
  assert calls == [(1, 1, 1.0, 0.25), (2, 2, 1.0, 0.25), (3, 3, 1.0, 0.25), (4, 4, 1.0, 0.25),
                   (5, 6, 1.0, 0.25), (7, 8, 1.0, 0.25)]
  assert logged[:2] == [("logged call", 1, 1, 1.0, 0.25), ("logged first step", 1)]
  assert [event[1:] for event in logged if event[0] == "logged checkpoint"] == [
      (3, 1.0), (4, 1.0), (6, 1.0), (8, 1.0)]
  assert [event[1] for event in logged if event[0] == "logged evaluation"] == [4, 8]
  # Each is logged once its work is done: the save of step 3 before its log line.
  assert recorder.events.index(("save", 3)) + 1 == recorder.events.index(
      ("logged checkpoint", 3, 1.0))


def test_a_diverged_call_is_logged_too():
  recorder, _, go = run(PLAN, losses={3: (1, math.nan)}, events=True, clock=ticks())
  with pytest.raises(errors.Diverged):
    go()
  calls = [event[1:3] for event in recorder.events if event[0] == "logged call"]
  assert calls == [(1, 1), (2, 2), (3, 3)]  # Its time was spent, and its step is lost.


def test_the_loops_log_makes_a_goodput_of_every_step_kept_once(tmp_path):
  clock = ticks(0.5)
  with events_lib.EventLog(str(tmp_path), clock=clock) as log:
    log.process_start(0, started=clock())
    _, _, go = run(PLAN, events=log, clock=clock)
    go()
  figures = goodput.goodput(events_lib.read_events(log.path))
  assert (figures["processes"], figures["productive_steps"], figures["lost_steps"]) == (1, 8, 0)
  assert figures["input_wait_s"] == pytest.approx(6 * 0.25)
  assert sum(figures[part] for part in goodput.PARTS) == pytest.approx(figures["wall_s"])
