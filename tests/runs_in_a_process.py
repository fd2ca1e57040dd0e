"""Trains several runs in one process of its own.

  python -m tests.runs_in_a_process RUNS.json

RUNS.json holds a list of Config keyword dicts, all on one backend; each run writes its workdir
as the trainer does. One process serves them all, which saves a start-up per run, for runs that
cannot share the test process: JAX's (Keras keeps the backend of its first import, and the test
process has TensorFlow's). TensorFlow's --deterministic runs train in the test process, which
conftest's restores_op_determinism turns back to a user's default afterwards.

A run's dict may also hold "resnet_blocks_per_stage": its ResNet is then built from the same
builder with those blocks in its first stages (as many stages as it lists), for tests that check
the ResNets' wiring, not their depth (a deep one's compile is most of such a run).
"""

import json
import sys


def main(path: str) -> None:
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  from trainer.distribute import keras_backend  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    runs = json.load(f)
  blocks = [settings.pop("resnet_blocks_per_stage", None) for settings in runs]
  configs = [config_lib.Config.from_flags(**settings) for settings in runs]
  keras_backend.select(configs[0].runtime)
  from trainer import train  # pylint: disable=g-import-not-at-top
  from trainer.models import resnet  # pylint: disable=g-import-not-at-top
  specs = dict(resnet.RESNET_SPECS)
  for config, blocks_per_stage in zip(configs, blocks):
    resnet.RESNET_SPECS.update(specs)
    if blocks_per_stage:
      network = config.model.name
      resnet.RESNET_SPECS[network] = (specs[network][0], tuple(blocks_per_stage))
    train.train_and_evaluate(config)


if __name__ == "__main__":
  main(sys.argv[1])
  from trainer import command  # pylint: disable=g-import-not-at-top
  command.exit_now()  # As the trainer's command ends.
