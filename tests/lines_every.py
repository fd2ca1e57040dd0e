"""The trainer's command line, its console never silent for more than SECONDS.

  python -m tests.lines_every SECONDS FLAGS...

In lines mode the trainer prints a line after a process's first call, at log points, and after
progress.LINE_SECONDS (30 s) of silence. A test that watches a slow run for its line with the
rate and the time left would wait those 30 s training at full load; tests/test_progress.py
checks the 30 s on a fake clock, so such a test runs the trainer with a shorter silence instead.
"""

import sys

from tests import patched_trainer


def main() -> None:
  seconds = float(sys.argv[1])

  def shorten() -> None:
    from trainer.loop import progress  # pylint: disable=g-import-not-at-top
    progress.LINE_SECONDS = seconds

  patched_trainer.run(sys.argv[2:], shorten)


if __name__ == "__main__":
  main()
