"""The trainer's command line, its console never silent for more than SECONDS.

  python -m tests.lines_every SECONDS FLAGS...

In lines mode the trainer prints a line after a process's first call, at log points, and after
progress.LINE_SECONDS (30 s) of silence. A test that watches a slow run for its line with the
rate and the time left would wait those 30 s training at full load; tests/test_progress.py
checks the 30 s on a fake clock, so such a test runs the trainer with a shorter silence instead.
"""

import sys


def main() -> None:
  seconds = float(sys.argv[1])
  sys.argv = ["trainer.main", *sys.argv[2:]]
  from trainer import command  # pylint: disable=g-import-not-at-top
  from trainer import main as trainer_main  # pylint: disable=g-import-not-at-top
  from trainer.distribute import keras_backend  # pylint: disable=g-import-not-at-top
  select = keras_backend.select

  def select_then_shorten(config) -> None:
    # After the backend is chosen: trainer.loop.progress imports Keras.
    select(config)
    from trainer.loop import progress  # pylint: disable=g-import-not-at-top
    progress.LINE_SECONDS = seconds

  keras_backend.select = select_then_shorten
  command.run(trainer_main.main)


if __name__ == "__main__":
  main()
