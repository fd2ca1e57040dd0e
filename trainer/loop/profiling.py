"""--profile_steps=A,B: a TensorBoard profile of training steps A to B, into the run's logdir.

TensorFlow's profiler (JAX's on --backend=jax) writes WORKDIR/plugins/profile/<timestamp>/,
which TensorBoard's PROFILE tab lists (it needs `pip install "keras-distributed-trainer[profile]"`: tensorboard-plugin-profile
and xprof). The loop plan ends a compiled call at step A-1 and at step B, so the window holds
exactly those steps; with A=1 it includes the first call's tracing and compiling. Only the chief
profiles. A run resumed inside the window does not profile.
"""

import os
from typing import Callable, Sequence, Tuple

from trainer import safe_files

PROFILE_DIR = os.path.join("plugins", "profile")


class ProfileWindow:
  """Starts the profiler before step A and stops it after step B."""

  def __init__(self, steps: Sequence[int], logdir: str, enabled: bool,
               profiler: Tuple[Callable[[str], None], Callable[[], None]]):
    self._steps = tuple(steps) if enabled else ()
    self._start, self._stop = profiler  # The backend's (interface.Backend.profiler).
    self._logdir = logdir
    self._running = False

  def before_call(self, step: int) -> None:
    """Called with the global step about to start after `step`."""
    if self._steps and step == self._steps[0] - 1:
      self._start(self._logdir)
      self._running = True

  def after_call(self, end_step: int) -> None:
    """Called once a compiled call has trained up to `end_step`."""
    if self._running and end_step >= self._steps[1]:
      self.stop()

  def stop(self) -> None:
    """Stops and writes the profile, if one is running (also on every way out of a run)."""
    if self._running:
      self._running = False
      with safe_files.writing("the profile", os.path.join(self._logdir, PROFILE_DIR)):
        self._stop()

