"""Ends a multi-worker process that stops making progress, instead of letting it hang.

A worker whose peer never starts, or dies, blocks inside TensorFlow for over ten minutes, holding
Python's GIL (so no thread of its own can act) and ignoring SIGTERM. So the watchdog is a small
child process: the trainer sends it a byte at every sign of progress; after `timeout` seconds of
silence it prints why and SIGKILLs the trainer. When the trainer ends, the pipe closes and the
watchdog exits with it.

Run as a child by ProgressWatchdog: python -m trainer.distribute.watchdog PARENT_PID TIMEOUT_S WHO
"""

import os
import select
import signal
import subprocess
import sys
import time
from typing import Callable, Optional


BEAT, COMPILING = b".", b"c"
# What the first call of a cluster may take beyond --worker_timeout: it traces, compiles and
# autotunes every kernel before its first collective, minutes for a large model on GPUs.
COMPILE_GRACE_S = 1800.0


# The folder that holds the trainer package, so `-m trainer...` finds it when it is not
# installed (run from a checkout).
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ProgressWatchdog:
  """Kills this process when beat() is not called for `timeout_s` seconds."""

  def __init__(self, timeout_s: float, who: str):
    self._child = subprocess.Popen(
        [sys.executable, "-m", "trainer.distribute.watchdog", str(os.getpid()), str(timeout_s),
         who],
        stdin=subprocess.PIPE, cwd=_PROJECT_ROOT,
        # Python's stderr, the console itself: file descriptor 2 may lead to trainer.console's
        # filter thread, which cannot run while this process blocks holding the GIL.
        stderr=sys.stderr)

  def beat(self) -> None:
    """Records progress."""
    self._child.stdin.write(BEAT)
    self._child.stdin.flush()

  def compiling(self) -> None:
    """Records progress, and that the next call compiles: it gets COMPILE_GRACE_S more."""
    self._child.stdin.write(COMPILING)
    self._child.stdin.flush()

  def stop(self) -> None:
    """Ends the watchdog; the process is safe from it from now on."""
    self._child.stdin.close()
    self._child.wait()


def watch(parent_pid: int, timeout_s: float, who: str, source: Optional[int] = None,
          kill: Callable[[int, int], None] = os.kill) -> int:
  """Waits for heartbeats on stdin (or the file descriptor `source`); kills `parent_pid` after
  `timeout_s` seconds without one, or `timeout_s` + COMPILE_GRACE_S after a compiling one."""
  source = sys.stdin.fileno() if source is None else source
  deadline = time.monotonic() + timeout_s
  while True:
    ready, _, _ = select.select([source], [], [], max(0.0, deadline - time.monotonic()))
    if ready:
      received = os.read(source, 4096)
      if not received:
        return 0  # The trainer closed the pipe or ended.
      grace = COMPILE_GRACE_S if received.endswith(COMPILING) else 0.0
      deadline = time.monotonic() + timeout_s + grace
      continue
    print(f"error: {who} made no progress for {timeout_s:.0f} s: a peer worker did not start or "
          "has stopped. Start every worker of the cluster (TF_CONFIG) together, or raise "
          "--worker_timeout if a step really takes this long. Stopping this worker.",
          file=sys.stderr, flush=True)
    kill(parent_pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
  # The trainer's Ctrl-C reaches its whole process group; the watchdog leaves when the pipe closes.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  sys.exit(watch(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]))
