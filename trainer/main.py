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

from trainer import command
from trainer import config as config_lib
from trainer import console
from trainer.distribute import keras_backend
from trainer import errors


class _CountOrAuto(flags.IntegerParser):
  """A count that also reads "auto" as 0, the value that lets the harness choose."""

  def parse(self, argument):
    if isinstance(argument, str) and argument.strip().lower() == "auto":
      return 0
    return super().parse(argument)


def _define_count_or_auto(name: str, default: int, help: str,  # pylint: disable=redefined-builtin
                          flag_values: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE(_CountOrAuto(lower_bound=0), name, default, help, flag_values,
               serializer=flags.ArgumentSerializer())


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> list:
  """Defines every flag of the trainer on `flag_values` (trainer.plan takes them too); returns
  --help's groups, (title, [flag names]) in the order they are defined."""
  groups = []

  def group(title: str) -> None:
    groups.append((title, []))

  def define(define_flag, name: str, **kwargs) -> None:
    # The default and help text that config.Config declares for it.
    define_flag(name, config_lib.default(name), help=config_lib.help_text(name),
                flag_values=flag_values, **kwargs)
    groups[-1][1].append(name)

  # One flag per Config field (config.FLAG_FIELDS; tests/test_config.py checks both ways), grouped
  # by job as --help shows them.
  group("Model")
  define(flags.DEFINE_string, "model")
  define(flags.DEFINE_enum, "api", enum_values=config_lib.APIS)
  define(flags.DEFINE_integer, "hidden_units", lower_bound=1)
  define(flags.DEFINE_boolean, "sync_batchnorm")
  group("Data")
  define(flags.DEFINE_string, "dataset")
  define(flags.DEFINE_string, "data_dir")
  define(flags.DEFINE_integer, "label_offset", lower_bound=0)
  define(flags.DEFINE_string, "tfds_data_dir")
  define(flags.DEFINE_list, "image_size")
  define(flags.DEFINE_float, "validation_split")
  define(flags.DEFINE_list, "image_shape")
  define(flags.DEFINE_integer, "num_classes", lower_bound=0)
  define(flags.DEFINE_integer, "num_test_examples", lower_bound=0)
  define(flags.DEFINE_enum, "augment", enum_values=config_lib.AUGMENTATIONS)
  define(flags.DEFINE_float, "eval_crop")
  define(flags.DEFINE_boolean, "normalize")
  define(flags.DEFINE_float, "memory_limit_mb", lower_bound=0.0)
  define(flags.DEFINE_string, "data_service")
  group("Recipe: optimisation and evaluation")
  define(flags.DEFINE_integer, "epochs", lower_bound=1)
  define(flags.DEFINE_integer, "batch_size", lower_bound=1)
  define(flags.DEFINE_enum, "optimizer", enum_values=config_lib.OPTIMIZERS)
  define(flags.DEFINE_float, "momentum")
  define(flags.DEFINE_boolean, "nesterov")
  define(flags.DEFINE_float, "weight_decay")
  define(flags.DEFINE_float, "learning_rate", lower_bound=0.0)
  define(flags.DEFINE_enum, "lr_scaling", enum_values=config_lib.LR_SCALINGS)
  define(flags.DEFINE_integer, "warmup_steps")
  define(flags.DEFINE_integer, "warmup_epochs")
  define(flags.DEFINE_enum, "lr_schedule", enum_values=config_lib.LR_SCHEDULES)
  define(flags.DEFINE_list, "lr_drops")
  define(flags.DEFINE_float, "label_smoothing")
  define(flags.DEFINE_float, "clip_norm")
  define(flags.DEFINE_integer, "grad_accum_steps")
  define(flags.DEFINE_float, "ema_decay")
  define(flags.DEFINE_boolean, "export_ema")
  define(flags.DEFINE_enum, "keep_best", enum_values=config_lib.KEEP_BEST)
  define(flags.DEFINE_integer, "seed", lower_bound=0)
  define(flags.DEFINE_integer, "max_steps_per_epoch", lower_bound=0)
  define(flags.DEFINE_integer, "eval_steps", lower_bound=0)
  define(flags.DEFINE_integer, "eval_every")
  group("Distribution and precision")
  define(flags.DEFINE_string, "backend")  # A string: $KERAS_BACKEND may hold any name.
  define(flags.DEFINE_enum, "strategy", enum_values=config_lib.STRATEGIES)
  define(flags.DEFINE_boolean, "gpu_memory_growth")
  define(flags.DEFINE_integer, "cpu_devices", lower_bound=1)
  define(flags.DEFINE_enum, "precision", enum_values=config_lib.PRECISIONS)
  define(flags.DEFINE_list, "worker_hosts")
  define(flags.DEFINE_integer, "task_index", lower_bound=0)
  define(flags.DEFINE_float, "worker_timeout", lower_bound=1.0)
  define(_define_count_or_auto, "steps_per_loop")
  define(flags.DEFINE_boolean, "jit_compile")
  group("Output")
  define(flags.DEFINE_string, "workdir")
  define(flags.DEFINE_integer, "log_every", lower_bound=1)
  define(flags.DEFINE_enum, "progress", enum_values=config_lib.PROGRESS)
  define(flags.DEFINE_integer, "checkpoint_every", lower_bound=0)
  define(flags.DEFINE_integer, "keep_checkpoints", lower_bound=1)
  define(flags.DEFINE_boolean, "export_saved_model")
  define(flags.DEFINE_list, "profile_steps")
  define(flags.DEFINE_boolean, "overwrite")
  define(flags.DEFINE_boolean, "deterministic")
  return groups


def define_machine_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """trainer.plan's own flags: the machine a plan is for, when it is not this one (GPU memory in
  GiB as cards are sold), and where to write the plan."""
  from trainer.distribute import gpu_specs
  flags.DEFINE_integer("gpus_per_worker", 0, "GPUs each worker uses (as "
                       "scripts/launch_local.py --gpus_per_worker); 0: the CPU.", lower_bound=0,
                       flag_values=flag_values)
  flags.DEFINE_integer("workers", 1, "Workers (hosts) in the cluster; more than 1 plans "
                       "--strategy=multi_worker_mirrored.", lower_bound=1, flag_values=flag_values)
  flags.DEFINE_string("compute_capability", None, "The GPUs' compute capability, X.Y.",
                      flag_values=flag_values)
  flags.DEFINE_float("gpu_memory_gb", None, "Each GPU's memory in GiB, as cards are sold: 16, "
                     "40, 80.", lower_bound=0.0, flag_values=flag_values)
  flags.DEFINE_string("gpu", None, "A named GPU, its capability and memory from one table: "
                      f"{', '.join(spec.name for spec in gpu_specs.GPUS)}.",
                      flag_values=flag_values)
  flags.DEFINE_string("json", None, "Also write the plan to this file as JSON.",
                      flag_values=flag_values)


def machine_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> dict:
  """define_machine_flags's parsed values as device_plan.assumed_facts takes them."""
  capability = flag_values["compute_capability"].value
  if capability is not None:
    major, _, minor = capability.partition(".")
    if not (major.isdigit() and minor.isdigit()):
      raise errors.UserError(f"--compute_capability={capability} must be X.Y, e.g. 8.0.")
    capability = (int(major), int(minor))
  return {"gpus_per_worker": flag_values["gpus_per_worker"].value,
          "workers": flag_values["workers"].value, "compute_capability": capability,
          "gpu_memory_gb": flag_values["gpu_memory_gb"].value, "gpu": flag_values["gpu"].value}


_GROUPS = define_flags()
FLAGS = flags.FLAGS


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> config_lib.Config:
  """Returns the immutable Config that the parsed flags describe."""
  values = {name: flag_values[name].value for name in config_lib.SETTINGS}
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
  except SystemExit as stopped:
    # The run is ending with its one line said: a Ctrl-C still pending must not raise a second
    # KeyboardInterrupt during shutdown (seen once: exit by SIGINT after the line).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if stopped.code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
      # Stopped by a signal, whose line is said and whose files are whole: a Ctrl-C inside a
      # native import can leave threads that crash the interpreter's shutdown (a fatal error in
      # PyThreadState_Get, exit by SIGABRT), so the process ends without it, as before main.
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(stopped.code)  # pylint: disable=protected-access
    raise


def _run() -> None:
  """Loads TensorFlow and trains, every failure and Ctrl-C shown as one line."""
  with errors.shown_as_one_line():
    # Imported after flag parsing so that --help answers without loading TensorFlow, and inside
    # shown_as_one_line: TensorFlow takes seconds to import, a likely moment for Ctrl-C.
    config = config_from_flags()
    keras_backend.select(config.runtime)  # Before the first import of Keras.
    from trainer.backends import interface
    from trainer import train
    train.train_and_evaluate(config, start_time=_PROCESS_START)
    interface.get(config.runtime.backend).leave_cluster(config.runtime)


if __name__ == "__main__":
  if any(argument in HELP_ARGUMENTS for argument in sys.argv[1:]):
    print(grouped_help())
    sys.exit(0)
  command.run(main)
