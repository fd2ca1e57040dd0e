"""A benchmark sub-run's output in a log file of its own, so the report stays readable.

The quick benchmark trains a dozen models in one process; each one's epoch lines, summary
block, Keras's warnings and TensorFlow's C++ lines interleaved on the console, and the summary
blocks pointed at temporary workdirs deleted by the end. Inside `captured(path)` everything the
process prints goes to `path`: Python's stdout and stderr, absl's log, and file descriptors 1
and 2, where C++ writes.
"""

import contextlib
import os
import sys
from typing import Iterator

from absl import logging as absl_logging


@contextlib.contextmanager
def captured(path: str) -> Iterator[None]:
  """Sends everything printed inside the block to `path` (created, with its folder)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  handler = absl_logging.get_absl_handler().python_handler
  streams = sys.stdout, sys.stderr, handler.stream
  for stream in streams:
    stream.flush()
  saved = os.dup(1), os.dup(2)
  with open(path, "w", buffering=1) as log:
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = handler.stream = log
    try:
      yield
    finally:
      log.flush()
      sys.stdout, sys.stderr, handler.stream = streams
      os.dup2(saved[0], 1)
      os.dup2(saved[1], 2)
      for descriptor in saved:
        os.close(descriptor)
