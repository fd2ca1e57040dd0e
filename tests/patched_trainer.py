"""The trainer's command line with one of its modules changed, for the helpers that tests run as
`python -m tests.NAME` (lines_every, shard_probe, signalled_at_step)."""

import sys
from typing import Callable, Sequence


def run(flags: Sequence[str], patch: Callable[[], None]) -> None:
  """Runs `python -m trainer.main FLAGS`, calling `patch()` once the backend is chosen: the
  trainer imports Keras and the modules a patch changes only then."""
  sys.argv = ["trainer.main", *flags]
  from trainer import command  # pylint: disable=g-import-not-at-top
  from trainer import main as trainer_main  # pylint: disable=g-import-not-at-top
  from trainer.distribute import keras_backend  # pylint: disable=g-import-not-at-top
  select = keras_backend.select

  def select_then_patch(runtime) -> None:
    select(runtime)
    patch()

  keras_backend.select = select_then_patch
  command.run(trainer_main.main)
