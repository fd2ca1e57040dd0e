"""Goodput from the event log: every second of a run in one disjoint part, across kills and
resumes; the log itself survives kill -9."""

import os
import signal
import subprocess
import sys

import pytest

from trainer import errors
from trainer import train
from trainer.records import events as events_lib
from trainer.records import goodput as goodput_lib
from trainer.records import run_record
from trainer.records import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Timeline:
  """A run's events as the controller would write them, on a clock the test moves."""

  def __init__(self):
    self.now = 1000.0
    self.events = []

  def _add(self, event, **fields):
    self.events.append({"event": event, "time": self.now, **fields})

  def start(self, step, startup=5.0, after=0.0):
    """A process that starts `after` s from now and spends `startup` s before its first log."""
    started = self.now + after
    self.now = started + startup
    self._add("process_start", host="h", pid=1, step=step, started=started)

  def call(self, first, last, seconds, wait=0.0):
    self.now += seconds
    self._add("call", steps=last - first + 1, first_step=first, last_step=last,
              seconds=seconds, input_wait_seconds=wait)

  def checkpoint(self, step, seconds=0.5):
    self.now += seconds
    self._add("checkpoint", step=step, seconds=seconds)

  def evaluation(self, step, seconds=2.0):
    self.now += seconds
    self._add("evaluation", step=step, seconds=seconds)

  def idle(self, seconds):
    self.now += seconds

  def stop(self, why, step):
    self._add("stop", why=why, step=step)


def assert_parts_add_up(figures):
  assert sum(figures[part] for part in goodput_lib.PARTS) == pytest.approx(figures["wall_s"])
  assert all(figures[part] >= 0 for part in goodput_lib.PARTS)


def test_an_uninterrupted_run_loses_nothing_and_every_second_has_one_part():
  run = Timeline()
  run.start(0, startup=5.0)
  run.call(1, 10, seconds=4.0, wait=0.2)  # Compiles: 3.8 s of step time for 10 steps.
  run.call(11, 20, seconds=1.0, wait=0.1)  # The pace: 0.9 s per 10 steps.
  run.checkpoint(20)
  run.idle(0.3)  # Progress and TensorBoard between calls.
  run.call(21, 30, seconds=1.0, wait=0.1)
  run.evaluation(30)
  run.checkpoint(30)
  run.idle(1.0)  # Exports.
  run.stop("finished", 30)
  figures = goodput_lib.goodput(run.events)
  assert figures["wall_s"] == pytest.approx(15.3)
  assert figures["processes"] == 1
  assert figures["lost_steps"] == 0 and figures["lost_s"] == 0
  assert figures["productive_steps"] == 30
  assert figures["startup_s"] == pytest.approx(5.0)
  assert figures["compile_s"] == pytest.approx(3.8 - 10 * 0.09)
  assert figures["productive_s"] == pytest.approx(3 * 0.9)
  assert figures["input_wait_s"] == pytest.approx(0.4)
  assert figures["checkpoint_s"] == pytest.approx(1.0)
  assert figures["evaluation_s"] == pytest.approx(2.0)
  assert figures["between_processes_s"] == 0
  assert figures["other_s"] == pytest.approx(1.3)
  assert_parts_add_up(figures)
  assert figures["fraction"] == pytest.approx(2.7 / 15.3)


def test_the_logs_own_events_make_the_goodput(tmp_path):
  # The log's field names are goodput's: written through EventLog, read back from the file.
  clock = Timeline()
  with events_lib.EventLog(str(tmp_path), clock=lambda: clock.now) as log:
    clock.now = 1005.0
    log.process_start(0, started=1000.0)
    for phase, seconds in (("imports", 2.0), ("runtime", 1.0), ("data", 1.5), ("model", 0.5)):
      log.startup_phase(phase, seconds)
    clock.now += 4.0
    log.call(1, 10, seconds=4.0, input_wait_seconds=0.2)
    log.first_step(10, time_to_first_step_s=9.0)
    clock.now += 1.0
    log.call(11, 20, seconds=1.0, input_wait_seconds=0.1)
    clock.now += 2.0
    log.evaluation(20, seconds=2.0)
    clock.now += 0.5
    log.checkpoint(20, seconds=0.5)
    clock.now += 1.0
  figures = goodput_lib.goodput(events_lib.read_events(log.path))
  assert figures["wall_s"] == pytest.approx(13.5)
  assert figures["startup_s"] == pytest.approx(5.0)
  assert figures["compile_s"] == pytest.approx(3.8 - 0.9)
  assert figures["input_wait_s"] == pytest.approx(0.3)
  assert figures["productive_s"] == pytest.approx(1.8)
  assert figures["evaluation_s"] == 2.0 and figures["checkpoint_s"] == 0.5
  assert figures["other_s"] == pytest.approx(1.0)  # After the checkpoint, until the stop.
  assert figures["productive_steps"] == 20 and figures["lost_steps"] == 0


def killed_and_resumed():
  run = Timeline()
  run.start(0, startup=5.0)
  run.call(1, 10, seconds=3.0)
  run.checkpoint(10)
  run.call(11, 20, seconds=1.0, wait=0.25)
  run.call(21, 30, seconds=1.0)  # The last call logged before kill -9.
  run.idle(0.5)  # Killed mid-way through the next call: no event.
  run.start(10, startup=4.0, after=7.0)  # Restarted 7 s after its last event; resumes at 10.
  run.call(11, 20, seconds=3.0)
  run.checkpoint(20)
  run.call(21, 30, seconds=1.0)
  run.evaluation(30)
  run.checkpoint(30)
  run.stop("finished", 30)
  return run.events


def test_a_run_killed_between_checkpoints_loses_the_steps_after_its_last_one():
  figures = goodput_lib.goodput(killed_and_resumed())
  assert figures["processes"] == 2
  assert figures["lost_steps"] == 20  # 11-30: after the checkpoint at 10, up to the last call.
  assert figures["lost_s"] == pytest.approx(0.75 + 1.0)  # Their step time, without the wait.
  # From its last event: the half second it lived on unlogged counts as between the two.
  assert figures["between_processes_s"] == pytest.approx(7.5)
  assert figures["productive_steps"] == 30  # Each step once.
  assert figures["startup_s"] == pytest.approx(5.0 + 4.0)
  assert_parts_add_up(figures)
  assert 0 < figures["fraction"] < 1


def test_a_damaged_last_line_is_skipped_with_a_warning(tmp_path, caplog):
  with events_lib.EventLog(str(tmp_path)) as log:
    log.process_start(0, started=1.0)
    log.call(1, 10, seconds=1.0, input_wait_seconds=0.0)
  path = os.path.join(str(tmp_path), events_lib.EVENTS_FILE)
  with open(path, "ab") as f:
    f.write(b'{"event": "call", "time": 17')  # Killed mid-write.
  with caplog.at_level("WARNING"):
    events = events_lib.read_events(path)
  assert [event["event"] for event in events] == ["process_start", "call", "stop"]
  assert "last line is damaged" in caplog.text


def test_a_resume_after_a_torn_line_keeps_its_own_events_and_skips_the_torn_one(tmp_path,
                                                                                caplog):
  path = os.path.join(str(tmp_path), events_lib.EVENTS_FILE)
  with open(path, "wb") as f:
    f.write(b'{"event": "process_start", "time": 1.0, "step": 0, "started": 0.5}\n'
            b'{"event": "call", "ti')
  with events_lib.EventLog(str(tmp_path)) as log:
    log.process_start(0, started=5.0)
  with caplog.at_level("WARNING"):
    events = events_lib.read_events(path)
  assert [(event["event"], event.get("started")) for event in events] == [
      ("process_start", 0.5), ("process_start", 5.0), ("stop", None)]
  assert "line 2 is damaged" in caplog.text


def test_a_clean_preemption_saves_at_the_stop_and_loses_nothing():
  run = Timeline()
  run.start(0)
  run.call(1, 10, seconds=3.0)
  run.checkpoint(10)
  run.call(11, 15, seconds=0.5)
  run.checkpoint(15)  # SIGTERM: saved before stopping.
  run.stop("preempted", 15)
  alone = goodput_lib.goodput(run.events)
  assert alone["lost_steps"] == 0 and alone["processes"] == 1
  run.start(15, startup=4.0, after=60.0)
  run.call(16, 20, seconds=2.5)
  run.evaluation(20)
  run.checkpoint(20)
  run.stop("finished", 20)
  figures = goodput_lib.goodput(run.events)
  assert figures["lost_steps"] == 0 and figures["lost_s"] == 0
  assert figures["productive_steps"] == 20
  assert figures["between_processes_s"] == pytest.approx(60.0)
  assert_parts_add_up(figures)


def test_several_processes_each_count_once_and_the_gaps_between_them():
  run = Timeline()
  run.start(0, startup=5.0)
  run.call(1, 10, seconds=3.0)
  run.call(11, 20, seconds=1.0)
  run.checkpoint(20)
  run.call(21, 25, seconds=0.5)  # Lost: killed after it.
  run.start(20, startup=4.0, after=10.0)
  run.call(21, 30, seconds=3.0)
  run.checkpoint(30)
  run.stop("preempted", 30)
  run.start(30, startup=2.0, after=20.0)  # Killed in start-up: nothing else logged.
  run.start(30, startup=4.0, after=5.0)
  run.call(31, 35, seconds=2.0)
  run.call(36, 40, seconds=0.5)
  run.call(41, 45, seconds=0.5)  # Diverged after it: stopped without saving.
  run.stop("error", 45)
  figures = goodput_lib.goodput(run.events)
  assert figures["processes"] == 4
  assert figures["between_processes_s"] == pytest.approx(10.0 + 20.0 + 5.0)
  assert figures["lost_steps"] == 5 + 15  # 21-25 of the first; 31-45 of the last, never saved.
  assert figures["productive_steps"] == 30
  assert figures["startup_s"] == pytest.approx(5.0 + 4.0 + 2.0 + 4.0)
  # The second process's only call compiles by the run's pace (1 s per 10 steps, 0.5 s per 5).
  assert figures["compile_s"] == pytest.approx(2.0 + 2.0 + 1.5)
  assert_parts_add_up(figures)
  assert figures["wall_s"] == pytest.approx(run.now - 1000.0)


def test_overlapping_times_are_counted_once():
  run = Timeline()
  run.start(0, startup=5.0)
  run.call(1, 10, seconds=2.0)
  run.events.append({"event": "checkpoint", "time": run.now, "step": 10, "seconds": 1.5})
  run.idle(1.0)
  run.stop("error", 10)
  # The next process started before the last event of this one (its clock is behind).
  run.start(10, startup=3.0, after=-2.0)
  run.call(11, 20, seconds=1.0)
  run.stop("finished", 20)
  figures = goodput_lib.goodput(run.events)
  assert figures["checkpoint_s"] == 0  # Inside the call before it.
  assert figures["between_processes_s"] == 0
  assert_parts_add_up(figures)
  assert figures["wall_s"] == pytest.approx(run.now - 1000.0)


def test_no_events_no_goodput():
  assert goodput_lib.goodput([])["wall_s"] == 0
  assert goodput_lib.goodput([])["fraction"] == 0


@pytest.mark.parametrize("error, why", [
    (None, "finished"),
    (errors.Interrupted("saved", signal.SIGTERM), "preempted"),
    (errors.Interrupted("saved", signal.SIGINT), "interrupted"),
    (KeyboardInterrupt(), "interrupted"),
    (errors.Terminated(), "preempted"),  # SIGTERM outside the loop.
    (errors.Diverged("nan"), "error"),
])
def test_the_stop_event_says_why_the_process_ended(tmp_path, error, why):
  times = iter(range(100))
  try:
    with events_lib.EventLog(str(tmp_path), clock=lambda: float(next(times))) as log:
      log.process_start(5, started=0.0)
      log.call(6, 9, seconds=0.5, input_wait_seconds=0.1)
      if error is not None:
        raise error
  except BaseException as e:  # pylint: disable=broad-except
    assert e is error
  events = events_lib.read_events(log.path)
  assert events[-1] == {"event": "stop", "time": 2.0, "why": why, "step": 9}
  assert events[1] == {"event": "call", "time": 1.0, "steps": 4, "first_step": 6,
                       "last_step": 9, "seconds": 0.5, "input_wait_seconds": 0.1}


def test_only_the_chief_writes(tmp_path):
  with events_lib.EventLog(str(tmp_path), enabled=False) as log:
    log.process_start(0, started=0.0)
  assert os.listdir(str(tmp_path)) == []


def test_a_fresh_start_keeps_the_runs_log_and_overwrite_deletes_it(tmp_path):
  # A process killed before its first checkpoint leaves a run that restarts from step 0: its
  # log is all that is left of that process. --overwrite starts another run.
  workdir = str(tmp_path)
  for name in (events_lib.EVENTS_FILE, "config.json"):
    with open(os.path.join(workdir, name), "w") as f:
      f.write("{}\n")
  os.makedirs(os.path.join(workdir, "train"))
  workdir_lib.start_afresh(workdir, {"model": "mlp"}, overwrite=False)
  assert sorted(os.listdir(workdir)) == ["config.json", events_lib.EVENTS_FILE]
  workdir_lib.start_afresh(workdir, {"model": "mlp"}, overwrite=True)
  assert os.listdir(workdir) == ["config.json"]


# A process that logs events until it is killed, saying after each how many it has written.
_WRITER = """
import sys, time
from trainer.records import events
log = events.EventLog(sys.argv[1])
log.process_start(0, started=time.time())
print(1, flush=True)
for step in range(1, 10**6):
  log.call(step, step, seconds=0.001, input_wait_seconds=0.0)
  print(step + 1, flush=True)
"""


def test_a_process_killed_with_sigkill_leaves_every_line_it_wrote(tmp_path):
  writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
  try:
    for line in writer.stdout:
      if int(line) >= 200:
        break
    writer.send_signal(signal.SIGKILL)
    written = int(line)
    for line in writer.stdout:  # Those it reported before the kill landed.
      written = int(line)
  finally:
    writer.kill()
    writer.wait()
  assert writer.returncode == -signal.SIGKILL
  events = events_lib.read_events(os.path.join(str(tmp_path), events_lib.EVENTS_FILE))
  assert len(events) >= written  # Every line reported written is there, whole.
  assert [event["last_step"] for event in events[1:]] == list(range(1, len(events)))
  assert "stop" not in [event["event"] for event in events]
  figures = goodput_lib.goodput(events)  # Killed: everything after step 0 is lost.
  assert figures["lost_steps"] == len(events) - 1 and figures["processes"] == 1


# ---------------------------------------------------------------- A real run's records.
def test_an_uninterrupted_runs_goodput_keeps_every_step_and_accounts_every_second(
    finished_runs):
  config, results = finished_runs["functional"]
  figures = results["goodput"]
  assert figures["processes"] == results["processes"] == 1
  assert (figures["lost_steps"], figures["lost_s"]) == (0, 0.0)
  assert figures["productive_steps"] == results["steps"] == 200
  assert_parts_add_up(figures)
  assert 0 < figures["fraction"] < 1
  assert figures["fraction"] == pytest.approx(figures["productive_s"] / figures["wall_s"])
  # One process, no gaps: its life is the run's wall time.
  assert results["wall_time_s"] == pytest.approx(figures["wall_s"])
  events = events_lib.read_events(os.path.join(config.output.workdir, events_lib.EVENTS_FILE))
  assert events[0]["event"] == "process_start" and events[0]["step"] == 0
  assert events[-1] == {**events[-1], "event": "stop", "why": "finished", "step": 200}
  assert [event["phase"] for event in events if event["event"] == "startup_phase"] == [
      "imports", "runtime", "data", "model"]


def test_the_summary_says_the_goodput_what_was_lost_and_the_biggest_other_part(finished_runs):
  _, results = finished_runs["functional"]
  [line] = train._goodput_line(run_record.RunResults(**results))  # pylint: disable=protected-access
  figures = results["goodput"]
  others = {part: figures[part] for part in goodput_lib.PARTS
            if part not in ("productive_s", "lost_s")}
  biggest = max(others, key=others.get)
  assert line.startswith(f"  goodput {figures['fraction']:.0%}: ")
  assert "nothing lost" in line and line.endswith(f", {others[biggest]:.1f} s")
