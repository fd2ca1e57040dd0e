"""Timing compiled calls so that their fixed cost does not count: each timed call is sized by
time, not by a count of iterations.

A call into TensorFlow costs about a millisecond whatever it does. A fixed count of iterations
that keeps a CPU busy for a second holds some 50 microseconds of work on a fast GPU, which would
then read 5-20x slower than it is. So the count is grown from a first measurement until one call
lasts at least MIN_CALL_SECONDS, and the best of several calls of that count is kept.
"""

import contextlib
import math
import resource
import time
from typing import Callable, Dict, Iterator

MIN_CALL_SECONDS = 0.1  # Against ~1 ms of fixed cost a call: 1% at most.


def seconds_per_iteration(run: Callable[[int], None], min_call_seconds: float = MIN_CALL_SECONDS,
                          calls: int = 3, clock: Callable[[], float] = time.perf_counter
                          ) -> float:
  """The best seconds per iteration of `run(count)`, one call that runs `count` iterations (and
  waits for them), over `calls` calls of at least `min_call_seconds` each; the first call of
  one iteration warms up (traces and compiles) and is not counted."""
  run(1)
  count, elapsed = 1, 0.0
  while True:
    start = clock()
    run(count)
    elapsed = clock() - start
    if elapsed >= min_call_seconds:
      break
    # 20% over the estimate, since the fixed cost made this call look slower per iteration.
    count = max(2 * count, math.ceil(count * 1.2 * min_call_seconds / max(elapsed, 1e-9)))
  best = elapsed / count
  for _ in range(calls - 1):
    start = clock()
    run(count)
    best = min(best, (clock() - start) / count)
  return best


def cpu_seconds() -> float:
  """CPU seconds (user and system) of this process and of the child processes it waited for:
  on a shared machine the measure of work that the load does not stretch."""
  own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
      resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextlib.contextmanager
def spent(into: Dict[str, dict], name: str) -> Iterator[None]:
  """Records into[name] the wall and CPU seconds the block took: {"wall_s", "cpu_s"}."""
  wall, cpu = time.perf_counter(), cpu_seconds()
  try:
    yield
  finally:
    into[name] = {"wall_s": round(time.perf_counter() - wall, 1),
                  "cpu_s": round(cpu_seconds() - cpu, 1)}
