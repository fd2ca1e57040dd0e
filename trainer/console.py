"""A console that shows what a user needs: TensorFlow's start-up chatter filtered, errors kept.

TensorFlow 2.21's C++ code logs through absl before absl's logging is initialised, and such
lines ignore TF_CPP_MIN_LOG_LEVEL: every run printed "Could not find cuda drivers", a cuInit
"error" on machines without a GPU, oneDNN and CPU-instruction notes, and XLA's MLIR line. Its
Python side logs INFO lines ("Sharding callback duration", "Reduce to /job:localhost ...") into
absl's handler, and NumPy 2 and Keras raise DeprecationWarnings inside their own code.

`quiet()` routes file descriptor 2 (where C++ writes) through a filter thread that applies
TF_CPP_MIN_LOG_LEVEL to those lines (default 2: INFO and WARNING dropped) and drops the cuInit
failure only when this machine has no NVIDIA device; every other line, errors and fatal ones
included, passes through. Python's own stderr (tracebacks, the harness's messages, absl's
logging) is moved off the filter first, so nothing Python prints can be filtered. Child
processes that must speak while this one blocks holding the GIL (the watchdog) write to Python's
stderr, not to file descriptor 2: the filter thread needs the GIL to forward lines.
"""

import atexit
import glob
import logging
import os
import re
import sys
import threading
import warnings

from absl import logging as absl_logging

# absl's C++ log line: severity letter, MMDD, time, thread id, file:line].
_CPP_LOG_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]]+\] ")
_PRE_INIT_NOTE = b"WARNING: All log messages before absl::InitializeLog() is called"
_CUINIT = re.compile(rb"failed call to cuInit|Could not find cuda drivers")
# cpu_feature_guard's note spans two lines; the second has no log prefix.
_INSTRUCTIONS_NOTE = re.compile(rb"^To enable the following instructions: .* rebuild TensorFlow")


def keep_line(line: bytes, min_level: int, has_gpu: bool) -> bool:
  """Whether a line TensorFlow's C++ code wrote to stderr reaches the console."""
  if line.startswith(_PRE_INIT_NOTE) or _INSTRUCTIONS_NOTE.match(line):
    return min_level < 1
  match = _CPP_LOG_LINE.match(line)
  if not match:
    return True
  level = b"IWEF".index(match.group(1))
  if min_level and level == 2 and not has_gpu and _CUINIT.search(line):
    return False  # No GPU here: a failed cuInit is expected, not an error.
  return level >= min_level


class _OwnInfoOnly(logging.Filter):
  """Passes warnings and errors from anywhere, INFO only from the trainer package."""

  _PACKAGE = os.path.dirname(os.path.abspath(__file__))

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.pathname.startswith(self._PACKAGE)


def _has_nvidia_device() -> bool:
  return bool(glob.glob("/dev/nvidia[0-9]*"))


def quiet() -> None:
  """Filters TensorFlow's chatter for the rest of the process (call before importing it)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  min_level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"] or 0)
  warnings.filterwarnings("ignore", category=DeprecationWarning)
  warnings.filterwarnings("ignore", category=FutureWarning, module=r"(tensorflow|keras)")
  # Raised by tf.distribute's own dataset code at every multi-replica run.
  warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
  logging.getLogger("tensorflow").setLevel(logging.WARNING)
  # TensorFlow's SavedModel code logs INFO lines ("Writing fingerprint ...") through absl too:
  # INFO reaches the console from this package only.
  absl_logging.get_absl_handler().addFilter(_OwnInfoOnly())
  if min_level < 1:  # The user asked for every line.
    return
  has_gpu = _has_nvidia_device()
  sys.stderr.flush()
  console = os.dup(2)
  # Python keeps writing straight to the console; only what C++ writes to fd 2 is filtered.
  sys.stderr = os.fdopen(os.dup(console), "w", buffering=1, errors="backslashreplace")
  absl_logging.get_absl_handler().python_handler.stream = sys.stderr
  read_end, write_end = os.pipe()
  os.dup2(write_end, 2)
  os.close(write_end)

  def forward():
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
      pending = b""
      while True:
        chunk = pipe.read(65536)
        if not chunk:
          break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if keep_line(line, min_level, has_gpu))
        if kept:
          os.write(console, kept)
      if pending:
        os.write(console, pending)

  thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
  thread.start()

  def drain_pipe():
    # Closing fd 2 ends the pipe; the thread forwards what is left, then stops.
    os.dup2(console, 2)
    thread.join(timeout=2)

  global _drain
  _drain = drain_pipe
  atexit.register(drain)


_drain = None


def drain() -> None:
  """Forwards what the filter still holds and stops it (at exit, or before os._exit)."""
  global _drain
  if _drain:
    _drain, pending = None, _drain
    pending()
