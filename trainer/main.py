"""Trains the MNIST classifier with one Keras model API under one tf.distribute strategy.

One device (CPU, or the single GPU):
  python -m trainer.main --api=functional --workdir=runs/functional
Every GPU of this host (or N logical CPU devices, as CI does):
  python -m trainer.main --api=subclass --strategy=mirrored --workdir=runs/mirrored
  python -m trainer.main --api=subclass --strategy=mirrored --cpu_devices=2 --workdir=runs/cpu2
A preset, with later flags overriding it:
  python -m trainer.main --flagfile=configs/seed.cfg --api=sequential --workdir=runs/seed
Offline, from the IDX files of Debian's dataset-fashion-mnist:
  python -m trainer.main --dataset=fashion_mnist --data_dir=/usr/share/datasets/fashion-mnist

This file only parses flags into a Config and calls trainer.train.train_and_evaluate.
"""

import time

_PROCESS_START = time.time()  # Before the heavy imports, so start-up time is measured whole.

# pylint: disable=g-import-not-at-top,wrong-import-position
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Keep TensorFlow's C++ start-up chatter out.

from absl import app
from absl import flags

from trainer import config as config_lib
from trainer import errors

# Model.
flags.DEFINE_enum("api", "functional", config_lib.APIS, "Keras API that builds the model.")
flags.DEFINE_integer("hidden_units", 256, "Width of the hidden Dense layer.", lower_bound=1)
# Data.
flags.DEFINE_enum("dataset", "mnist", config_lib.DATASETS,
                  "mnist and fashion_mnist read through tensorflow-datasets, or from --data_dir; "
                  "synthetic is random data of MNIST's shapes made inside tf.data.")
flags.DEFINE_string("data_dir", None,
                    "Folder with the four MNIST-format IDX files (train-images-idx3-ubyte.gz, ...), "
                    "read instead of tensorflow-datasets; works offline.")
flags.DEFINE_string("tfds_data_dir", None, "tensorflow-datasets cache folder (default: tfds's).")
# Optimisation.
flags.DEFINE_integer("epochs", 10, "Passes over the training split.", lower_bound=1)
flags.DEFINE_integer("batch_size", 32,
                     "GLOBAL batch size: split across all replicas of all workers.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.", lower_bound=0.0)
flags.DEFINE_integer("seed", 0, "Seed of the initial weights and the data order.", lower_bound=0)
flags.DEFINE_integer("max_steps_per_epoch", 0,
                     "Cut each epoch to at most this many steps; 0 is the whole split.",
                     lower_bound=0)
# Hardware.
flags.DEFINE_enum("strategy", "auto", config_lib.STRATEGIES,
                  "tf.distribute strategy; auto is mirrored over several devices, one_device on "
                  "one GPU, default on CPU. multi_worker_mirrored spans hosts (TF_CONFIG).")
flags.DEFINE_integer("cpu_devices", 1,
                     "Split the host CPU into this many logical devices, so mirrored runs that many "
                     "replicas without a GPU.", lower_bound=1)
flags.DEFINE_list("worker_hosts", [],
                  "With --strategy=multi_worker_mirrored: host:port of every worker, the same list "
                  "on each; builds TF_CONFIG. Unset reads TF_CONFIG from the environment.")
flags.DEFINE_integer("task_index", 0, "This worker's index in --worker_hosts.", lower_bound=0)
flags.DEFINE_float("worker_timeout", 120.0,
                   "Multi-worker: seconds without progress (a peer that never starts or dies) "
                   "before this worker exits with code 3.", lower_bound=1.0)
flags.DEFINE_enum("precision", "auto", config_lib.PRECISIONS,
                  "Keras dtype policy; auto is mixed_float16 on GPUs of compute capability >= 7.0, "
                  "float32 otherwise.")
flags.DEFINE_integer("steps_per_loop", 0,
                     "Training steps per tf.function call; 0 chooses automatically.",
                     lower_bound=0)
flags.DEFINE_boolean("jit_compile", None,
                     "Compile the training step with XLA; unset chooses automatically.")
# Output.
flags.DEFINE_string("workdir", None,
                    "Folder for TensorBoard events and results.json; default "
                    "runs/<dataset>-<api>-<strategy>.")
flags.DEFINE_integer("log_every", 100, "Write training scalars every this many steps.",
                     lower_bound=1)
flags.DEFINE_integer("checkpoint_every", 1000,
                     "Save a checkpoint every this many steps (and at every epoch's end); 0 saves "
                     "only at epoch ends.", lower_bound=0)
flags.DEFINE_integer("keep_checkpoints", 3, "How many recent checkpoints to keep.", lower_bound=1)
flags.DEFINE_boolean("overwrite", False,
                     "Delete the run in --workdir and start afresh, instead of resuming it.")
flags.DEFINE_boolean("deterministic", False,
                     "Turn on TensorFlow op determinism: the same run gives bit-identical "
                     "weights, also across a kill and resume. Slower on GPUs.")

FLAGS = flags.FLAGS


def config_from_flags() -> config_lib.Config:
  """Returns the immutable Config that the parsed flags describe."""
  workdir = FLAGS.workdir or os.path.join(
      "runs", f"{FLAGS.dataset}-{FLAGS.api}-{FLAGS.strategy}")
  return config_lib.Config(
      api=FLAGS.api, hidden_units=FLAGS.hidden_units, dataset=FLAGS.dataset,
      data_dir=FLAGS.data_dir, tfds_data_dir=FLAGS.tfds_data_dir, epochs=FLAGS.epochs,
      batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate, seed=FLAGS.seed,
      max_steps_per_epoch=FLAGS.max_steps_per_epoch, strategy=FLAGS.strategy,
      cpu_devices=FLAGS.cpu_devices, precision=FLAGS.precision,
      worker_hosts=tuple(FLAGS.worker_hosts), task_index=FLAGS.task_index,
      worker_timeout=FLAGS.worker_timeout,
      steps_per_loop=FLAGS.steps_per_loop, jit_compile=FLAGS.jit_compile, workdir=workdir,
      log_every=FLAGS.log_every, checkpoint_every=FLAGS.checkpoint_every,
      keep_checkpoints=FLAGS.keep_checkpoints, overwrite=FLAGS.overwrite,
      deterministic=FLAGS.deterministic)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  # Imported after flag parsing so that --help answers without loading TensorFlow.
  from trainer import train
  try:
    train.train_and_evaluate(config_from_flags(), start_time=_PROCESS_START)
  except errors.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(e.exit_code)


if __name__ == "__main__":
  app.run(main)
