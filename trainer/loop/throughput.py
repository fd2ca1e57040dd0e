"""One meter for every throughput figure of a run: TensorBoard's windows and results.json's totals.

Throughput is wall-clock time between the ends of compiled calls: the host work between calls
(progress bar, TensorBoard writes, checkpoints inside an epoch) counts, because a user waits for
it too. Two things do not: the process's first call, which carries tracing and compiling (it
gives `time_to_first_step_s` instead), and whatever runs under `paused()` (evaluation and the
epoch-end checkpoint).
"""

import contextlib
import time
from typing import Callable, Dict, Iterator, List, Optional


class ThroughputMeter:
  """Counts timed steps and seconds, per log window and in total."""

  def __init__(self, global_batch_size: int, process_start_time: float,
               clock: Callable[[], float] = time.perf_counter,
               wall_clock: Callable[[], float] = time.time):
    self._batch = global_batch_size
    self._process_start = process_start_time
    self._clock, self._wall_clock = clock, wall_clock
    self._last = clock()
    self._steps = self._window_steps = 0
    self._seconds = self._window_seconds = 0.0
    self.time_to_first_step_s: Optional[float] = None
    self.window_rates: List[float] = []  # examples/sec of each log window, as in TensorBoard.
    # Seconds per step of the last timed call (None before one): what auto-sized calls and the
    # progress line's rate are made from.
    self.seconds_per_step: Optional[float] = None
    # The first call's steps and seconds (compiling included): a run too short to time a call
    # apart reports its throughput over this instead of none.
    self.first_call = (0, 0.0)

  def record(self, num_steps: int) -> None:
    """Counts a compiled call of `num_steps` steps that has just finished."""
    now = self._clock()
    if self.time_to_first_step_s is None:
      self.time_to_first_step_s = self._wall_clock() - self._process_start
      self.first_call = (num_steps, now - self._last)
    else:
      self._steps += num_steps
      self._seconds += now - self._last
      self._window_steps += num_steps
      self._window_seconds += now - self._last
      self.seconds_per_step = (now - self._last) / num_steps
    self._last = now

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    """Leaves the time spent inside out of every figure."""
    try:
      yield
    finally:
      self._last = self._clock()

  def end_window(self) -> Dict[str, float]:
    """Closes the log window: its examples_per_sec and step_time_ms ({} if nothing was timed)."""
    figures = {}
    if self._window_steps:
      figures = {"examples_per_sec": self._window_steps * self._batch / self._window_seconds,
                 "step_time_ms": 1000 * self._window_seconds / self._window_steps}
      self.window_rates.append(figures["examples_per_sec"])
    self._window_steps, self._window_seconds = 0, 0.0
    return figures

  def totals(self) -> Dict[str, float]:
    """This process's timed examples and seconds, and its time to the first step (0 if none)."""
    return {"timed_examples": float(self._steps * self._batch), "timed_seconds": self._seconds,
            "time_to_first_step_s": self.time_to_first_step_s or 0.0}

  def untimed_examples_per_sec(self) -> float:
    """Over the first call, compiling included (0.0 before it): for a run with no other call."""
    steps, seconds = self.first_call
    return steps * self._batch / seconds if seconds else 0.0

  @property
  def examples_per_sec(self) -> float:
    """Over every timed call of this process (0.0 when none was timed)."""
    return self._steps * self._batch / self._seconds if self._seconds else 0.0
