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

import os
import signal
import sys
import textwrap
import time

_PROCESS_START = time.time()  # Before the heavy imports, so start-up time is measured whole.


def _stopped_before_main(signal_number, frame) -> None:
  """Ctrl-C while Python loads this module and parses the flags: nothing is written yet."""
  del signal_number, frame  # Unused.
  sys.stderr.write("error: Stopped by Ctrl-C during start-up; nothing was written.\n")
  sys.stderr.flush()
  os._exit(128 + signal.SIGINT)  # pylint: disable=protected-access


signal.signal(signal.SIGINT, _stopped_before_main)

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

from trainer import config as config_lib
from trainer import console
from trainer.distribute import keras_backend
from trainer import errors


# --help's groups: (title, [flag names]) in the order they are defined below.
_GROUPS = []


def _group(title: str) -> None:
  """Starts the --help group that the flags defined next belong to."""
  _GROUPS.append((title, []))


def _define(define, name: str, **kwargs) -> None:
  """Defines --name with the default and help text that config.Config declares for it."""
  define(name, config_lib.default(name), help=config_lib.help_text(name), **kwargs)
  _GROUPS[-1][1].append(name)


class _CountOrAuto(flags.IntegerParser):
  """A count that also reads "auto" as 0, the value that lets the harness choose."""

  def parse(self, argument):
    if isinstance(argument, str) and argument.strip().lower() == "auto":
      return 0
    return super().parse(argument)


def _define_count_or_auto(name: str, default: int, help: str) -> None:  # pylint: disable=redefined-builtin
  flags.DEFINE(_CountOrAuto(lower_bound=0), name, default, help,
               serializer=flags.ArgumentSerializer())


# One flag per Config field (config.FLAG_FIELDS; tests/test_config.py checks both ways), grouped
# by job as --help shows them.
_group("Model")
_define(flags.DEFINE_string, "model")
_define(flags.DEFINE_enum, "api", enum_values=config_lib.APIS)
_define(flags.DEFINE_integer, "hidden_units", lower_bound=1)
_define(flags.DEFINE_boolean, "sync_batchnorm")
_group("Data")
_define(flags.DEFINE_string, "dataset")
_define(flags.DEFINE_string, "data_dir")
_define(flags.DEFINE_integer, "label_offset", lower_bound=0)
_define(flags.DEFINE_string, "tfds_data_dir")
_define(flags.DEFINE_list, "image_size")
_define(flags.DEFINE_float, "validation_split")
_define(flags.DEFINE_list, "image_shape")
_define(flags.DEFINE_integer, "num_classes", lower_bound=0)
_define(flags.DEFINE_integer, "num_test_examples", lower_bound=0)
_define(flags.DEFINE_enum, "augment", enum_values=config_lib.AUGMENTATIONS)
_define(flags.DEFINE_float, "eval_crop")
_define(flags.DEFINE_boolean, "normalize")
_define(flags.DEFINE_float, "memory_limit_mb", lower_bound=0.0)
_define(flags.DEFINE_string, "data_service")
_group("Recipe: optimisation and evaluation")
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
_group("Distribution and precision")
_define(flags.DEFINE_string, "backend")  # A string: $KERAS_BACKEND may hold any name.
_define(flags.DEFINE_enum, "strategy", enum_values=config_lib.STRATEGIES)
_define(flags.DEFINE_boolean, "gpu_memory_growth")
_define(flags.DEFINE_integer, "cpu_devices", lower_bound=1)
_define(flags.DEFINE_enum, "precision", enum_values=config_lib.PRECISIONS)
_define(flags.DEFINE_list, "worker_hosts")
_define(flags.DEFINE_integer, "task_index", lower_bound=0)
_define(flags.DEFINE_float, "worker_timeout", lower_bound=1.0)
_define(_define_count_or_auto, "steps_per_loop")
_define(flags.DEFINE_boolean, "jit_compile")
_group("Output")
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
  return config_lib.Config.from_flags(**values)


HELP_ARGUMENTS = ("-h", "-help", "--help", "-helpshort", "--helpshort", "-?")


def grouped_help(width: int = 80) -> str:
  """--help: the usage above, then every flag of this trainer by job, each default stated once
  (config.shown_default); --helpfull adds absl's and TensorFlow's own flags."""
  lines = [__doc__.strip(), ""]
  for title, names in _GROUPS:
    lines.append(f"{title}:")
    for name in names:
      flag = FLAGS[name]
      choices = getattr(flag.parser, "enum_values", None)
      kind = f"<{'|'.join(choices)}>" if choices else ""
      lines.append(f"  --{name}{'=' + kind if kind else ''} (default: "
                   f"{config_lib.shown_default(name)})")
      lines.extend(textwrap.wrap(config_lib.help_text(name), width, initial_indent=" " * 6,
                                 subsequent_indent=" " * 6))
    lines.append("")
  lines.append("--helpfull lists absl's and TensorFlow's flags too.")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  console.quiet()  # Before TensorFlow loads: its start-up chatter is filtered from here on.
  # From here Ctrl-C raises KeyboardInterrupt, which shown_as_one_line shows as one line once
  # whatever was being written has removed its half.
  signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    _run()
  except SystemExit:
    # The run is ending with its one line said: a Ctrl-C still pending must not raise a second
    # KeyboardInterrupt during shutdown (seen once: exit by SIGINT after the line).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise


def _run() -> None:
  """Loads TensorFlow and trains, every failure and Ctrl-C shown as one line."""
  with errors.shown_as_one_line():
    # Imported after flag parsing so that --help answers without loading TensorFlow, and inside
    # shown_as_one_line: TensorFlow takes seconds to import, a likely moment for Ctrl-C.
    config = config_from_flags()
    keras_backend.select(config.runtime)  # Before the first import of Keras.
    from trainer.distribute import cluster
    from trainer import train
    train.train_and_evaluate(config, start_time=_PROCESS_START)
    cluster.leave_cluster(config.runtime)


if __name__ == "__main__":
  if any(argument in HELP_ARGUMENTS for argument in sys.argv[1:]):
    print(grouped_help())
    sys.exit(0)
  app.run(main)
