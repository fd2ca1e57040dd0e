"""How every command of the project ends: at once, once its work is done and its files closed.

Python's own shutdown destroys every object the process still holds first, and TensorFlow's and
JAX's teardown costs about a second a process for nothing (docs/measurements.md); worse, a
tf.data iterator destroyed there waits for its autotuning thread, and finished runs have hung at
exit until killed. Every file of a run is whole and closed before its main returns, so a command
instead does what Python's shutdown does before destroying anything (joins its non-daemon
threads, runs the exit handlers: absl's log flush, the console filter's drain, JAX's distributed
shutdown), flushes its streams and ends the process with its exit code.
"""

import atexit
import os
import sys
import threading
from typing import Callable, NoReturn, Sequence

from absl import app


def run(main: Callable[[Sequence[str]], object]) -> NoReturn:
  """absl's `app.run(main)`, then `exit_now` with the code it exits with. An exception other
  than SystemExit (a bug) keeps Python's own ending, with its traceback."""
  try:
    app.run(main)
    code = 0
  except SystemExit as exiting:
    code = exiting.code
  exit_now(code)


def exit_now(code: object = 0) -> NoReturn:
  """Ends the process as `sys.exit(code)` would, without destroying its objects first."""
  if code is None:
    code = 0
  elif not isinstance(code, int):  # As Python shows sys.exit("message").
    print(code, file=sys.stderr)
    code = 1
  # What Py_FinalizeEx does before destroying anything: wait for the non-daemon threads (and
  # shut down thread pools, whose hooks this runs), then the atexit handlers.
  threading._shutdown()  # pylint: disable=protected-access
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):  # A closed pipe or stream: nothing left to say there.
      pass
  os._exit(code)  # pylint: disable=protected-access
