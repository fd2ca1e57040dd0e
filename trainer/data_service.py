"""Serves a tf.data service cluster, where a run's training preprocessing can run (--data_service).

One dispatcher, on a machine every worker and trainer can reach; its journal in --work_dir lets a
restarted dispatcher resume the jobs it was serving:
  python -m trainer.data_service --dispatcher --port=5050 --work_dir=/shared/data_service
Any number of workers, each on its own machine (they do the preprocessing), each with the
training data mounted at the path the trainer reads it from:
  python -m trainer.data_service --worker --dispatcher=HOST:5050 --port=5051 \
      --shared_data_dir=/shared/imagenet
Then the trainer sends its training pipeline there:
  python -m trainer.main ... --data_dir=/shared/imagenet --data_service=HOST:5050

Each process serves until SIGTERM or Ctrl-C. Workers run the trainer's tf.data graph, so a
worker needs this project's TensorFlow version. For an image folder or TFRecord shards the graph
holds their paths and the worker reads the files itself; other data is held in the graph.
"""

import os
import signal
import socket
import sys
import threading

from absl import flags

from trainer import command
from trainer import errors

flags.DEFINE_bool("dispatcher", False, "Run the dispatcher: it hands work to the workers.")
flags.DEFINE_bool("worker", False, "Run a worker: it runs the pipelines the dispatcher gives it.")
flags.DEFINE_integer("port", 0, "Port to listen on; 0 picks a free one (printed at start).",
                     lower_bound=0)
flags.DEFINE_string("work_dir", "", "Dispatcher: folder for its journal, so that a restarted "
                    "dispatcher resumes its jobs. Empty: no journal, a restart loses them.")
flags.DEFINE_string("dispatcher_address", "", "Worker: the dispatcher's HOST:PORT, given as "
                    "--dispatcher=HOST:PORT.")
flags.DEFINE_string("host", socket.gethostname(), "Worker: the name trainers reach this "
                    "machine by; the dispatcher hands it to them with the port.")
# Not --worker_timeout: trainer.main's watchdog flag has that name, and tests import both.
flags.DEFINE_integer("lost_worker_timeout", 10, "Dispatcher: seconds without a worker's "
                     "heartbeat before it counts as lost and gets no more work.", lower_bound=1)
# Not --data_dir: trainer.main's flag has that name, and tests import both.
flags.DEFINE_string("shared_data_dir", "", "Worker: the folder of training data (an image "
                    "folder, TFRecord shards, or a folder of them) that trainers name by "
                    "--data_dir, mounted here at the same path; a worker that cannot read it "
                    "says so and exits at start. Empty: no check.")
FLAGS = flags.FLAGS


def _serve_dispatcher(port: int, work_dir: str, worker_timeout_s: int):
  # The tf.data service imports TensorFlow; --help stays fast without it.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.data.experimental.service.DispatchServer(tf.data.experimental.service.DispatcherConfig(
      port=port, work_dir=work_dir or None, fault_tolerant_mode=bool(work_dir),
      worker_timeout_ms=worker_timeout_s * 1000))


def _serve_worker(dispatcher: str, port: int, host: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.data.experimental.service.WorkerServer(tf.data.experimental.service.WorkerConfig(
      dispatcher_address=dispatcher, worker_address=f"{host}:%port%", port=port))


def _split_role(argv):
  """`--dispatcher=HOST:PORT` is the worker's dispatcher address, `--dispatcher` alone the role:
  absl's boolean flag cannot take a value, so the address is renamed before parsing."""
  return [f"--dispatcher_address={arg.partition('=')[2]}"
          if arg.startswith("--dispatcher=") else arg for arg in argv]


def _refuse(message: str) -> None:
  """Bad input ends as the trainer's does: one line, exit 2."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(errors.BAD_INPUT)


def _check_shared_data(path: str) -> None:
  """A worker must read the trainers' files at their path: an unmounted share is often an empty
  or missing folder, and it would fail only later, at a trainer's first batch."""
  try:
    readable = bool(os.listdir(path))
  except OSError as e:
    reason = (e.strerror or str(e)).lower()
    _refuse(f"--shared_data_dir={path} cannot be read on {socket.gethostname()} ({reason}): "
            "mount the training data there, at the path the trainers read it from.")
  if not readable:
    _refuse(f"--shared_data_dir={path} is empty on {socket.gethostname()}: mount the training "
            "data there, at the path the trainers read it from.")


def main(argv) -> None:
  del argv  # Unused.
  if FLAGS.dispatcher == FLAGS.worker:
    _refuse("Give --dispatcher (with --port and --work_dir) or --worker (with "
            "--dispatcher=HOST:PORT), one of the two.")
  if FLAGS.worker and not FLAGS.dispatcher_address:
    _refuse("A worker needs its dispatcher: add --dispatcher=HOST:PORT.")
  if FLAGS.worker and FLAGS.shared_data_dir:
    _check_shared_data(FLAGS.shared_data_dir)
  from trainer import console  # pylint: disable=g-import-not-at-top
  console.quiet()
  stopped = threading.Event()
  for signal_number in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signal_number, lambda *unused: stopped.set())
  try:
    server = (_serve_dispatcher(FLAGS.port, FLAGS.work_dir, FLAGS.lost_worker_timeout)
              if FLAGS.dispatcher else _serve_worker(FLAGS.dispatcher_address, FLAGS.port,
                                                     FLAGS.host))
  except RuntimeError as e:  # TensorFlow's "Could not start gRPC server", nothing more.
    _refuse(f"The tf.data service {'dispatcher' if FLAGS.dispatcher else 'worker'} could not "
            f"listen on port {FLAGS.port} ({e}): is it in use? Pick another --port.")
  if FLAGS.dispatcher:
    journal = (f", journal in {FLAGS.work_dir}" if FLAGS.work_dir
               else ", no journal (--work_dir): a restart loses its jobs")
    print(f"tf.data service dispatcher listening on {socket.gethostname()}:"
          f"{server.target.rpartition(':')[2]}{journal}.", flush=True)
  else:
    reads = f", reading {FLAGS.shared_data_dir}" if FLAGS.shared_data_dir else ""
    print(f"tf.data service worker listening on {FLAGS.host}:{server._address.rpartition(':')[2]}"
          f", serving dispatcher {FLAGS.dispatcher_address}{reads}.", flush=True)
  while not stopped.wait(0.2):
    pass
  server.stop()
  print("tf.data service stopped.", flush=True)


if __name__ == "__main__":
  sys.argv = _split_role(sys.argv)
  command.run(main)
