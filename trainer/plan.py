"""Prints the device plan of a run: what it would do on this machine, or on one you are not on.

The trainer's flags, plus the machine (all optional; without them, this machine as the run reads
it), for example NVIDIA's ResNet-50 recipe on a DGX-1:

  python -m trainer.plan --model=resnet50 --dataset=synthetic --image_shape=224,224,3 \
      --optimizer=sgd --momentum=0.875 --batch_size=2048 --gpus_per_worker=8 --gpu=V100-16GB
  python -m trainer.plan --backend=jax --model=resnet50 --data_dir=/data/imagenet \
      --image_size=224,224 --batch_size=4096 --workers=2 --gpus_per_worker=8 \
      --compute_capability=9.0 --gpu_memory_gb=80 --json=plan.json

It prints the strategy, replicas and per-replica batch, the precision and why, XLA and the steps
a compiled call packs, the all-reduce, the environment the run sets, the export's platforms and
the memory a device needs against its own; --json=FILE writes the same as JSON. A run logs the
same plan at start and follows it. The input shape comes from the data's headers and metadata
(nothing is loaded) or from --dataset=synthetic --image_shape. A setting the machine cannot run
exits 2 with one line, as the run would. Seconds, no GPU needed.
"""

import json
import sys
from typing import Sequence

from absl import app
from absl import flags

from trainer import command
from trainer import errors
from trainer import main as main_lib

main_lib.define_machine_flags()
FLAGS = flags.FLAGS


def plan_from_flags(flag_values: flags.FlagValues = FLAGS):
  """The DevicePlan that parsed `flag_values` (the trainer's and the machine's) describe."""
  from trainer.distribute import device_plan  # pylint: disable=g-import-not-at-top
  config = main_lib.config_from_flags(flag_values)
  machine = main_lib.machine_from_flags(flag_values)
  if machine["workers"] > 1 and config.runtime.strategy != "multi_worker_mirrored":
    if config.runtime.strategy != "auto":
      raise errors.UserError(f"--workers={machine['workers']} plans a cluster, and "
                             f"--strategy={config.runtime.strategy} runs on one host: use "
                             "--strategy=multi_worker_mirrored or leave --strategy out.")
    config = config.replace(strategy="multi_worker_mirrored")
  facts = None
  if any(machine[name] for name in ("gpus_per_worker", "gpu", "compute_capability",
                                    "gpu_memory_gb")) or machine["workers"] > 1:
    facts = device_plan.assumed_facts(**machine)
  return device_plan.plan_run(config, facts)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  from trainer import console  # pylint: disable=g-import-not-at-top
  console.quiet()
  with errors.shown_as_one_line():
    from trainer.distribute import keras_backend  # pylint: disable=g-import-not-at-top
    keras_backend.select(main_lib.config_from_flags().runtime)  # Before Keras loads.
    from trainer.distribute import device_plan  # pylint: disable=g-import-not-at-top
    plan = plan_from_flags()
    print("\n".join(device_plan.describe(plan)), flush=True)
    if FLAGS.json:
      with open(FLAGS.json, "w") as f:
        json.dump(plan.as_dict(), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
  command.run(main)
