"""One meter for every throughput figure of a run: TensorBoard's windows and results.json's totals.

Throughput is wall-clock time between the ends of compiled calls: the host work between calls
(progress bar, TensorBoard writes, checkpoints inside an epoch) counts, because a user waits for
it too. Two things do not: the process's first call, which carries tracing and compiling (it
gives `time_to_first_step_s` instead), and whatever runs under `paused()` (evaluation and the
epoch-end checkpoint).

The input pipeline's share: of that time, the part the loop spent waiting for its next batch
(`input_wait`, the seconds the task has waited so far), per window and in total. Above about
INPUT_BOUND_SHARE the run was input-bound: a faster accelerator would not have trained faster.
"""

import contextlib
import time
from typing import Callable, Dict, Iterator, List, Optional

INPUT_BOUND_SHARE = 0.1  # A run that waits for input longer than this says so at its end.


class ThroughputMeter:
  """Counts timed steps and seconds, per log window and in total."""

  def __init__(self, global_batch_size: int, process_start_time: float,
               clock: Callable[[], float] = time.perf_counter,
               wall_clock: Callable[[], float] = time.time,
               input_wait: Callable[[], float] = lambda: 0.0):
    self._batch = global_batch_size
    self._input_wait = input_wait
    self._last_wait = 0.0
    self._waited = self._window_waited = 0.0
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
    waited_so_far = self._input_wait()
    if self.time_to_first_step_s is None:
      self.time_to_first_step_s = self._wall_clock() - self._process_start
      self.first_call = (num_steps, now - self._last)
    else:
      self._steps += num_steps
      self._seconds += now - self._last
      self._window_steps += num_steps
      self._window_seconds += now - self._last
      self._waited += waited_so_far - self._last_wait
      self._window_waited += waited_so_far - self._last_wait
      self.seconds_per_step = (now - self._last) / num_steps
    self._last, self._last_wait = now, waited_so_far

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    """Leaves the time spent inside out of every figure."""
    try:
      yield
    finally:
      self._last = self._clock()

  def end_window(self) -> Dict[str, float]:
    """Closes the log window: its examples_per_sec, step_time_ms and input_wait_share ({} if
    nothing was timed)."""
    figures = {}
    if self._window_steps:
      figures = {"examples_per_sec": self._window_steps * self._batch / self._window_seconds,
                 "step_time_ms": 1000 * self._window_seconds / self._window_steps,
                 "input_wait_share": _share(self._window_waited, self._window_seconds)}
      self.window_rates.append(figures["examples_per_sec"])
    self._window_steps, self._window_seconds, self._window_waited = 0, 0.0, 0.0
    return figures

  def totals(self) -> Dict[str, float]:
    """This process's timed examples and seconds, the part of them spent waiting for input, and
    its time to the first step (0 if none)."""
    return {"timed_examples": float(self._steps * self._batch), "timed_seconds": self._seconds,
            "input_wait_s": self._waited,
            "time_to_first_step_s": self.time_to_first_step_s or 0.0}

  def untimed_examples_per_sec(self) -> float:
    """Over the first call, compiling included (0.0 before it): for a run with no other call."""
    steps, seconds = self.first_call
    return steps * self._batch / seconds if seconds else 0.0

  @property
  def examples_per_sec(self) -> float:
    """Over every timed call of this process (0.0 when none was timed)."""
    return self._steps * self._batch / self._seconds if self._seconds else 0.0


def _share(part: float, whole: float) -> float:
  return min(1.0, part / whole) if whole > 0 else 0.0


def input_bound_advice(share: float, data_service: str = "") -> Optional[str]:
  """One line for the end of a run that waited for input more than INPUT_BOUND_SHARE of its
  loop, naming what helps (more service workers when it already used --data_service); None
  otherwise."""
  if share <= INPUT_BOUND_SHARE:
    return None
  if data_service:
    return (f"Input-bound: the loop waited for the next batch {share:.0%} of its time. More "
            f"workers for the tf.data service at {data_service} (python -m "
            "trainer.data_service --worker), on machines of their own, would train faster.")
  return (f"Input-bound: the loop waited for the next batch {share:.0%} of its time. More CPU "
          "cores for tf.data (or fewer other processes on them), images stored nearer the "
          "size trained on, or the preprocessing on other machines (--data_service, see "
          "python -m trainer.data_service) would train faster.")
