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


class ProgressWatchdog:
  """Kills this process when beat() is not called for `timeout_s` seconds."""

  def __init__(self, timeout_s: float, who: str):
    self._child = subprocess.Popen(
        [sys.executable, "-m", "trainer.distribute.watchdog", str(os.getpid()), str(timeout_s),
         who],
        stdin=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        # Python's stderr, the console itself: file descriptor 2 may lead to trainer.console's
        # filter thread, which cannot run while this process blocks holding the GIL.
        stderr=sys.stderr)

  def beat(self) -> None:
    """Records progress."""
    self._child.stdin.write(b".")
    self._child.stdin.flush()

  def stop(self) -> None:
    """Ends the watchdog; the process is safe from it from now on."""
    self._child.stdin.close()
    self._child.wait()


def watch(parent_pid: int, timeout_s: float, who: str) -> int:
  """Waits for heartbeats on stdin; kills `parent_pid` after `timeout_s` seconds without one."""
  deadline = time.monotonic() + timeout_s
  while True:
    ready, _, _ = select.select([sys.stdin.buffer], [], [], max(0.0, deadline - time.monotonic()))
    if ready:
      if not os.read(sys.stdin.fileno(), 4096):
        return 0  # The trainer closed the pipe or ended.
      deadline = time.monotonic() + timeout_s
      continue
    print(f"error: {who} made no progress for {timeout_s:.0f} s: a peer worker did not start or "
          "has stopped. Start every worker of the cluster (TF_CONFIG) together, or raise "
          "--worker_timeout if a step really takes this long. Stopping this worker.",
          file=sys.stderr, flush=True)
    os.kill(parent_pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
  # The trainer's Ctrl-C reaches its whole process group; the watchdog leaves when the pipe closes.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  sys.exit(watch(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]))
