"""The trainer's command line, killed with SIGKILL once it has logged a given training step.

  python -m tests.signalled_at_step STEP FLAGS...

A kill -9 at a known step rather than at whatever moment a watching test gets to it: the run
dies right after writing the training scalars of the first log point at or past STEP, so the
steps since its last checkpoint are logged and lost, as in a real crash, and a test need not
give the run thousands of steps to be sure of catching it mid-epoch.
"""

import os
import signal
import sys


def main() -> None:
  kill_at = int(sys.argv[1])
  sys.argv = ["trainer.main", *sys.argv[2:]]
  from trainer import main as trainer_main  # pylint: disable=g-import-not-at-top
  from trainer.distribute import keras_backend  # pylint: disable=g-import-not-at-top
  select = keras_backend.select

  def select_then_arm(config) -> None:
    # After the backend is chosen, as the trainer imports its modules only then.
    select(config)
    from trainer.records import summaries  # pylint: disable=g-import-not-at-top
    scalars = summaries.RunWriter.scalars

    def scalars_then_kill(self, writer, step, values):
      scalars(self, writer, step, values)
      if writer == "train" and step >= kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

    summaries.RunWriter.scalars = scalars_then_kill

  keras_backend.select = select_then_arm
  trainer_main.app.run(trainer_main.main)


if __name__ == "__main__":
  main()
