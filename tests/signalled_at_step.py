"""The trainer's command line, sent a signal by itself once it has logged a given training step.

  python -m tests.signalled_at_step SIGNAL STEP FLAGS...

SIGNAL is KILL or STOP. A kill -9 at a known step rather than at whatever moment a watching test
gets to it: the run dies right after writing the training scalars of the first log point at or
past STEP, so the steps since its last checkpoint are logged and lost, as in a real crash, and a
test need not give the run thousands of steps to be sure of catching it mid-epoch. STOP halts it
there instead, holding its workdir, until the test sends SIGCONT (after any signal it wants the
run to find when it goes on).
"""

import os
import signal
import sys

from tests import patched_trainer


def main() -> None:
  sent = getattr(signal, f"SIG{sys.argv[1]}")
  at_step = int(sys.argv[2])

  def arm() -> None:
    from trainer.records import summaries  # pylint: disable=g-import-not-at-top
    scalars = summaries.RunWriter.scalars

    def scalars_then_signal(self, writer, step, values):
      nonlocal at_step
      scalars(self, writer, step, values)
      if writer == "train" and step >= at_step:
        at_step = sys.maxsize  # Once: a stopped run goes on when continued.
        os.kill(os.getpid(), sent)

    summaries.RunWriter.scalars = scalars_then_signal

  patched_trainer.run(sys.argv[3:], arm)


if __name__ == "__main__":
  main()
