"""Trains an image classifier, built with one Keras model API, under one tf.distribute strategy.

One device (CPU, or the single GPU):
  python -m trainer.main --api=functional --workdir=runs/functional
Every GPU of this host (or N logical CPU devices, as CI does):
  python -m trainer.main --api=subclass --strategy=mirrored --workdir=runs/mirrored
  python -m trainer.main --api=subclass --strategy=mirrored --cpu_devices=2 --workdir=runs/cpu2
A preset, with later flags overriding it:
  python -m trainer.main --flagfile=configs/seed.cfg --api=sequential --workdir=runs/seed
Offline, from the IDX files of Debian's dataset-fashion-mnist:
  python -m trainer.main --dataset=fashion_mnist --data_dir=/usr/share/datasets/fashion-mnist
Your own model on your own images (one subfolder per class):
  python -m trainer.main --model=examples/residual_subclass.py:build --data_dir=~/photos

Every flag below can also come from a preset file, --flagfile=FILE (flags after it override
it); rerunning the same command on a workdir resumes its run.
"""
# This file only parses flags into a Config and calls trainer.train.train_and_evaluate.

import time

_PROCESS_START = time.time()  # Before the heavy imports, so start-up time is measured whole.

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

from trainer import config as config_lib
from trainer import console
from trainer import errors


def _define(define, name: str, **kwargs) -> None:
  """Defines --name with the default and help text that config.Config declares for it."""
  define(name, config_lib.default(name), help=config_lib.help_text(name), **kwargs)


# One flag per Config field (tests/test_config.py checks both ways).
# Model.
_define(flags.DEFINE_string, "model")
_define(flags.DEFINE_enum, "api", enum_values=config_lib.APIS)
_define(flags.DEFINE_integer, "hidden_units", lower_bound=1)
_define(flags.DEFINE_boolean, "sync_batchnorm")
# Data.
_define(flags.DEFINE_string, "dataset")
_define(flags.DEFINE_string, "data_dir")
_define(flags.DEFINE_integer, "label_offset", lower_bound=0)
_define(flags.DEFINE_string, "tfds_data_dir")
_define(flags.DEFINE_list, "image_size")
_define(flags.DEFINE_float, "validation_split")
_define(flags.DEFINE_list, "image_shape")
_define(flags.DEFINE_integer, "num_classes", lower_bound=0)
_define(flags.DEFINE_enum, "augment", enum_values=config_lib.AUGMENTATIONS)
_define(flags.DEFINE_float, "eval_crop")
_define(flags.DEFINE_boolean, "normalize")
_define(flags.DEFINE_float, "memory_limit_mb", lower_bound=0.0)
# Optimisation.
_define(flags.DEFINE_integer, "epochs", lower_bound=1)
_define(flags.DEFINE_integer, "batch_size", lower_bound=1)
_define(flags.DEFINE_enum, "optimizer", enum_values=config_lib.OPTIMIZERS)
_define(flags.DEFINE_float, "momentum")
_define(flags.DEFINE_boolean, "nesterov")
_define(flags.DEFINE_float, "weight_decay")
_define(flags.DEFINE_float, "learning_rate", lower_bound=0.0)
_define(flags.DEFINE_enum, "lr_scaling", enum_values=config_lib.LR_SCALINGS)
_define(flags.DEFINE_integer, "warmup_steps")
_define(flags.DEFINE_integer, "warmup_epochs")
_define(flags.DEFINE_enum, "lr_schedule", enum_values=config_lib.LR_SCHEDULES)
_define(flags.DEFINE_list, "lr_drops")
_define(flags.DEFINE_float, "label_smoothing")
_define(flags.DEFINE_float, "clip_norm")
_define(flags.DEFINE_integer, "grad_accum_steps")
_define(flags.DEFINE_float, "ema_decay")
_define(flags.DEFINE_boolean, "export_ema")
_define(flags.DEFINE_enum, "keep_best", enum_values=config_lib.KEEP_BEST)
_define(flags.DEFINE_integer, "seed", lower_bound=0)
_define(flags.DEFINE_integer, "max_steps_per_epoch", lower_bound=0)
_define(flags.DEFINE_integer, "eval_steps", lower_bound=0)
_define(flags.DEFINE_integer, "eval_every")
# Hardware.
_define(flags.DEFINE_enum, "strategy", enum_values=config_lib.STRATEGIES)
_define(flags.DEFINE_integer, "cpu_devices", lower_bound=1)
_define(flags.DEFINE_enum, "precision", enum_values=config_lib.PRECISIONS)
_define(flags.DEFINE_list, "worker_hosts")
_define(flags.DEFINE_integer, "task_index", lower_bound=0)
_define(flags.DEFINE_float, "worker_timeout", lower_bound=1.0)
_define(flags.DEFINE_integer, "steps_per_loop", lower_bound=0)
_define(flags.DEFINE_boolean, "jit_compile")
# Output.
_define(flags.DEFINE_string, "workdir")
_define(flags.DEFINE_integer, "log_every", lower_bound=1)
_define(flags.DEFINE_enum, "progress", enum_values=config_lib.PROGRESS)
_define(flags.DEFINE_integer, "checkpoint_every", lower_bound=0)
_define(flags.DEFINE_integer, "keep_checkpoints", lower_bound=1)
_define(flags.DEFINE_list, "profile_steps")
_define(flags.DEFINE_boolean, "overwrite")
_define(flags.DEFINE_boolean, "deterministic")

FLAGS = flags.FLAGS


def config_from_flags() -> config_lib.Config:
  """Returns the immutable Config that the parsed flags describe."""
  values = {name: FLAGS[name].value for name in config_lib.SETTINGS}
  for name in ("image_size", "image_shape", "profile_steps", "lr_drops"):
    try:
      values[name] = tuple(int(value) for value in values[name])
    except ValueError:
      raise errors.UserError(f"--{name}={','.join(values[name])} must be a comma-separated list "
                             "of integers, e.g. 64,64.") from None
  return config_lib.Config(**values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  console.quiet()  # Before TensorFlow loads: its start-up chatter is filtered from here on.
  # Imported after flag parsing so that --help answers without loading TensorFlow.
  from trainer.distribute import cluster
  from trainer import train
  with errors.shown_as_one_line():
    config = config_from_flags()
    train.train_and_evaluate(config, start_time=_PROCESS_START)
    cluster.leave_cluster(config)


if __name__ == "__main__":
  app.run(main)
