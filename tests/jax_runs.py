"""Trains several runs on Keras's JAX backend in one process of its own.

  python -m tests.jax_runs RUNS.json

RUNS.json holds a list of Config keyword dicts; each run writes its workdir as the trainer
does. One process serves them all (Keras keeps the backend of its first import, so JAX runs
cannot share the test process), which saves a JAX start-up per run. The CPU is split into two
host devices for the process, so `mirrored` runs span two replicas.
"""

import json
import sys


def main(path: str) -> None:
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  from trainer.distribute import keras_backend  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    configs = [config_lib.Config.from_flags(backend="jax", cpu_devices=2, **settings)
               for settings in json.load(f)]
  keras_backend.select(configs[0].runtime)
  from trainer import train  # pylint: disable=g-import-not-at-top
  for config in configs:
    train.train_and_evaluate(config)


if __name__ == "__main__":
  main(sys.argv[1])
