"""Where the seconds before the first training step go, phase by phase.

results.json's `startup_s` holds one figure per phase, in order; they add up to
`time_to_first_step_s`. The phases: `imports` (Python, TensorFlow and Keras, from process
start), `runtime` (devices and the strategy), `data` (reading the dataset into memory, or opening
its stream), `model` (building the model, optimizer and metrics; restoring a checkpoint;
readying the workdir) and `first_step` (tracing and compiling the first training call, and
running it).
"""

import time
from typing import Callable, Dict, Optional

PHASES = ("imports", "runtime", "data", "model", "first_step")


class StartupClock:
  """Marks the end of each start-up phase against the process's start time."""

  def __init__(self, process_start: float, clock: Callable[[], float] = time.time):
    self._clock = clock
    self._last = process_start
    self._seconds: Dict[str, float] = {}

  def mark(self, phase: str) -> None:
    """Ends `phase` (one of PHASES, in order) now."""
    now = self._clock()
    self._seconds[phase] = round(now - self._last, 3)
    self._last = now

  def phases(self, time_to_first_step_s: Optional[float]) -> Dict[str, Optional[float]]:
    """Every phase's seconds; first_step is what `time_to_first_step_s` leaves after the others
    (None, like it, when this process trained no step)."""
    seconds = {phase: self._seconds.get(phase) for phase in PHASES[:-1]}
    if time_to_first_step_s is None:
      seconds["first_step"] = None
    else:
      seconds["first_step"] = round(
          time_to_first_step_s - sum(value or 0.0 for value in seconds.values()), 3)
    return seconds
