"""Goodput: where every second of a run went, over all its processes, from its event log.

`goodput(events)` reads the events of trainer.records.events and splits the run's wall time,
from the first process's start to the last event, into disjoint parts that add up to it:

  startup_s             from a process's start to its first timed work (a call, an evaluation
                        or a checkpoint); a process that did none spent its whole life there
  compile_s             a process's first call beyond its steps at the process's pace (the step
                        time per step of its other calls; of the run's other calls where it
                        made only one; nothing where no call can be compared)
  input_wait_s          the time calls waited for their next batch
  productive_s          the step time of the steps whose results were kept
  lost_s                the step time of steps trained again later: those after the step the
                        next process started from (or, for the last process, after its last
                        checkpoint); `lost_steps` counts them
  checkpoint_s          writing checkpoints
  evaluation_s          evaluations
  between_processes_s   from a process's last event to the next process's start
  other_s               the rest of each process's life: host work between calls (progress,
                        TensorBoard), exports, and the time after its last timed work

A call's seconds are its input wait, its compiling (first call only) and its step time; its
step time is productive or lost by its steps. The parts are made disjoint here too: a timed
interval that overlaps the one before it (a clock stepped back) counts from that one's end, and
a process that started before the previous one's last event counts from that event.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence

_TIMED = ("call", "checkpoint", "evaluation")
PARTS = ("startup_s", "compile_s", "input_wait_s", "productive_s", "lost_s", "checkpoint_s",
         "evaluation_s", "between_processes_s", "other_s")


@dataclasses.dataclass
class _Process:
  started: float
  logged: float  # When its process_start was written.
  start_step: int
  events: List[dict]  # Those after its process_start.


def goodput(events: Sequence[dict]) -> Dict[str, float]:
  """The run's goodput from its events, in order: wall_s, its disjoint PARTS, processes,
  productive_steps, lost_steps and fraction (productive_s over wall_s). Events before the first
  process_start belong to no process and are left out."""
  processes = _processes(events)
  totals = {part: 0.0 for part in PARTS}
  totals.update(processes=len(processes), productive_steps=0, lost_steps=0)
  if not processes:
    return {"wall_s": 0.0, **totals, "fraction": 0.0}
  run_pace = _pace([call for process in processes for call in _calls(process)[1:]])
  first_start = previous_end = processes[0].started
  for index, process in enumerate(processes):
    start = max(process.started, previous_end)
    totals["between_processes_s"] += start - previous_end if index else 0.0
    end = max([start, process.logged] + [event["time"] for event in process.events])
    kept_through = (processes[index + 1].start_step if index + 1 < len(processes)
                    else _last_checkpoint(process))
    _add_process(totals, process, start, end, kept_through, run_pace)
    previous_end = end
  wall = previous_end - first_start
  return {"wall_s": wall, **totals, "fraction": totals["productive_s"] / wall if wall else 0.0}


def _processes(events: Sequence[dict]) -> List[_Process]:
  processes = []
  for event in events:
    if event["event"] == "process_start":
      processes.append(_Process(event.get("started", event["time"]), event["time"],
                                event.get("step", 0), []))
    elif processes:
      processes[-1].events.append(event)
  return processes


def _calls(process: _Process) -> List[dict]:
  return [event for event in process.events if event["event"] == "call"]


def _step_time(call: dict) -> float:
  """A call's seconds without its input wait."""
  return call["seconds"] - min(max(call.get("input_wait_seconds", 0.0), 0.0), call["seconds"])


def _pace(calls: Sequence[dict]) -> Optional[float]:
  """Step time per step over `calls` (None without any)."""
  steps = sum(call["steps"] for call in calls)
  return sum(_step_time(call) for call in calls) / steps if steps else None


def _last_checkpoint(process: _Process) -> int:
  """The step a resume after `process` would start from, by its own events."""
  return max([process.start_step] + [event["step"] for event in process.events
                                     if event["event"] == "checkpoint"])


def _add_process(totals: Dict[str, float], process: _Process, start: float, end: float,
                 kept_through: int, run_pace: Optional[float]) -> None:
  """Adds one process's life, from `start` to `end`, to `totals`."""
  calls = _calls(process)
  pace = _pace(calls[1:]) if len(calls) > 1 else run_pace
  timed = sorted((event for event in process.events if event["event"] in _TIMED),
                 key=lambda event: event["time"])
  cursor, first_work, worked = start, None, 0.0
  for event in timed:
    # The interval ends at the event's time; counted from the previous one's end at the latest.
    interval_start = max(event["time"] - max(event["seconds"], 0.0), cursor)
    interval_end = max(event["time"], interval_start)
    seconds = interval_end - interval_start
    first_work = interval_start if first_work is None else first_work
    worked += seconds
    cursor = interval_end
    if event["event"] == "call":
      _add_call(totals, event, seconds, kept_through,
                pace if event is calls[0] else None)
    else:
      totals[f"{event['event']}_s"] += seconds
  startup = (first_work if first_work is not None else end) - start
  totals["startup_s"] += startup
  totals["other_s"] += (end - start) - startup - worked


def _add_call(totals: Dict[str, float], call: dict, seconds: float, kept_through: int,
              pace: Optional[float]) -> None:
  """Splits a call's `seconds` (its own, or less where it overlapped the interval before) into
  input wait, compiling (given the `pace` of a process's first call) and productive or lost
  step time."""
  share = seconds / call["seconds"] if call["seconds"] > 0 else 0.0
  step_time = _step_time(call)
  compiling = 0.0 if pace is None else min(max(step_time - call["steps"] * pace, 0.0), step_time)
  totals["input_wait_s"] += share * (call["seconds"] - step_time)
  totals["compile_s"] += share * compiling
  steps = call["steps"]
  lost = min(max(call["last_step"] - max(call["first_step"] - 1, kept_through), 0), steps)
  stepping = share * (step_time - compiling)
  if steps:
    totals["productive_s"] += stepping * (steps - lost) / steps
    totals["lost_s"] += stepping * lost / steps
  else:
    totals["other_s"] += stepping
  totals["productive_steps"] += steps - lost
  totals["lost_steps"] += lost
