"""The run's event log, WORKDIR/events.jsonl: what each process of a run did, and when.

One JSON object per line, appended and flushed at every call boundary, so a process killed with
kill -9 leaves every line up to its last call (the kernel holds what was flushed; fsync would
only add a power cut, at a disk write per line). Only the chief writes, holding the workdir's
lock, so the lines of one process are never interleaved with another's. trainer.records.goodput
turns the events into where every second of the run went.

Every event has `event` and `time` (time.time() when it was written). Calls, checkpoints and
evaluations have `seconds`, ending at `time`, and their intervals do not overlap: the
controller times each around its own work only.

  process_start  host, pid, step (the step it starts from), started (the process's start)
  startup_phase  phase (trainer.loop.startup.PHASES but first_step), seconds
  first_step     step (the first call's last), time_to_first_step_s (from the process's start
                 to the first call's end, compiling included, as the throughput meter has it;
                 less the phases above, it is startup's first_step phase)
  call           steps, first_step, last_step (steps first_step..last_step were trained),
                 seconds (the compiled call alone), input_wait_seconds (the part of it spent
                 waiting for the next batch)
  checkpoint     step, seconds
  evaluation     step, seconds
  stop           why (STOP_REASONS), step (the last step trained)

A damaged line is skipped with a warning wherever it is. The last line is damaged when the
process died writing it; a line inside the file is damaged the same way when a process died
mid-line and another resumed the run (the writer ends the torn line before its first event, so
only the torn one is lost). Either way the lines around it are sound, and the goodput of a run
is worth more with one event missing than not at all; the warning names the line.
"""

import json
import os
import signal
import socket
import time
from typing import Callable, List, Optional

from absl import logging

from trainer import errors
from trainer import safe_files
from trainer.records import workdir as workdir_lib

EVENTS_FILE = workdir_lib.EVENTS_FILE
STOP_REASONS = ("finished", "preempted", "interrupted", "error")


def stop_reason(error: Optional[BaseException]) -> str:
  """Why a process stopped, from the exception that ended it (None: it finished)."""
  if error is None:
    return "finished"
  if isinstance(error, errors.Interrupted):  # Stopped by the loop, saved.
    signal_number = error.exit_code - 128
  elif isinstance(error, KeyboardInterrupt):  # Outside the loop; errors.Terminated for SIGTERM.
    signal_number = getattr(error, "signal_number", signal.SIGINT)
  else:
    return "error"
  return "preempted" if signal_number == signal.SIGTERM else "interrupted"


class EventLog:
  """Appends the events of this process to WORKDIR/events.jsonl (on the chief; elsewhere a
  no-op). As a context manager it writes the stop event on the way out, its reason taken from
  the exception, unless `stop` was called."""

  def __init__(self, workdir: str, enabled: bool = True,
               clock: Callable[[], float] = time.time, host: Optional[str] = None,
               pid: Optional[int] = None):
    self.path = os.path.join(workdir, EVENTS_FILE)
    self._clock = clock
    self._host = host or socket.gethostname()
    self._pid = os.getpid() if pid is None else pid
    self._file = None
    self._step = 0  # The last step trained (or started from): the stop event's.
    self._stopped = False
    if enabled:
      self._file = open(self.path, "a+b")
      self._end_torn_line()

  def _end_torn_line(self) -> None:
    """Ends a line a killed process left unfinished, so this process's first event stays a
    line of its own."""
    self._file.seek(0, os.SEEK_END)
    if self._file.tell():
      self._file.seek(-1, os.SEEK_END)
      if self._file.read(1) != b"\n":
        self._file.write(b"\n")

  def _write(self, event: str, **fields) -> None:
    if self._file is None:
      return
    line = json.dumps({"event": event, "time": self._clock(), **fields})
    with safe_files.writing("event log", self.path):
      self._file.write(line.encode() + b"\n")
      self._file.flush()

  def process_start(self, step: int, started: float) -> None:
    """This process begins; it started (time.time()) at `started` and resumes from `step`."""
    self._step = step
    self._write("process_start", host=self._host, pid=self._pid, step=step, started=started)

  def startup_phase(self, phase: str, seconds: float) -> None:
    self._write("startup_phase", phase=phase, seconds=seconds)

  def first_step(self, step: int, time_to_first_step_s: float) -> None:
    """The first call has ended at `step`, `time_to_first_step_s` after the process started."""
    self._write("first_step", step=step, time_to_first_step_s=time_to_first_step_s)

  def call(self, first_step: int, last_step: int, seconds: float,
           input_wait_seconds: float) -> None:
    """A compiled call trained steps `first_step`..`last_step` in `seconds`."""
    self._step = last_step
    self._write("call", steps=last_step - first_step + 1, first_step=first_step,
                last_step=last_step, seconds=seconds, input_wait_seconds=input_wait_seconds)

  def checkpoint(self, step: int, seconds: float) -> None:
    self._write("checkpoint", step=step, seconds=seconds)

  def evaluation(self, step: int, seconds: float) -> None:
    self._write("evaluation", step=step, seconds=seconds)

  def stop(self, why: str) -> None:
    """The process ends, for `why` (one of STOP_REASONS); written once."""
    if why not in STOP_REASONS:
      raise ValueError(f"stop reason {why!r}: must be one of {', '.join(STOP_REASONS)}")
    if not self._stopped:
      self._stopped = True
      self._write("stop", why=why, step=self._step)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> "EventLog":
    return self

  def __exit__(self, error_type, error, traceback) -> None:
    try:
      self.stop(stop_reason(error))
    finally:
      self.close()


def read_events(path: str) -> List[dict]:
  """The events of the log at `path` in order ([] when there is none); damaged lines are
  skipped, each with a warning."""
  if not os.path.exists(path):
    return []
  with open(path, "rb") as f:
    lines = f.read().split(b"\n")
  if lines and not lines[-1]:
    lines.pop()  # The file ends with a line's end, as every whole line does.
  events = []
  for number, line in enumerate(lines, 1):
    event = _parsed(line)
    if event is None:
      where = "its last line" if number == len(lines) else f"line {number}"
      logging.warning("%s: %s is damaged (a process killed while writing it) and is skipped.",
                      path, where)
    else:
      events.append(event)
  return events


def _parsed(line: bytes) -> Optional[dict]:
  """The event a line holds, or None when it holds none: not JSON, or not an event."""
  try:
    event = json.loads(line)
  except ValueError:  # UnicodeDecodeError is one too.
    return None
  if not isinstance(event, dict) or not isinstance(event.get("event"), str) or not isinstance(
      event.get("time"), (int, float)):
    return None
  return event
