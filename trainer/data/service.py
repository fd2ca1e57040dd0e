"""Training batches made by a tf.data service cluster (--data_service), on other machines.

The trainer hands the service a dataset in the `distributed_epoch` processing mode: the
dispatcher hands the dataset's source elements (steps, or files) to whichever worker asks next,
so each is made once, by one worker, and adding workers divides the preprocessing. The other
modes do not fit: `parallel_epochs` makes every batch on every worker (each example N times an
epoch), and the static sharding policies need a fixed list of workers and stop when one of them
is lost.

What travels to the workers, by source:
- An image folder, held or streamed: its files' paths and labels, never the images. The source
  is one element per global step, each step's batch made from its step alone
  (`InputPipeline.batches_by_step`): the epoch's seeded permutation of the file list, each file
  read by its absolute path, decoded (or cropped from its original with its position's seed)
  and augmented as a local run does it.
- TFRecord shards, held or streamed: their paths. A shard cannot be read at a position, so the
  source is one element per file of each epoch, in the epoch's seeded file order
  (`sources._ShardStream.records_by_file`); a worker reads the files it is handed, a few at a
  time, shuffles their records in a small buffer, crops and flips each on its own seed (seed,
  epoch, position in the epoch's file order) and batches them.
- Data held in memory from IDX files or tfds, and synthetic data: the data itself, inside the
  dataset's graph (at most HELD_BYTES_LIMIT), one element per step as for a folder. A streamed
  tfds dataset is refused: tfds reads it on this machine, from its own cache.
Paths are this machine's, made absolute: every service worker must read the data at the same
path (shared storage; `python -m trainer.data_service --worker --shared_data_dir=PATH` checks
at start that it can). A worker that cannot read a file fails the batch, and the trainer stops
with one line naming the worker and the file (`worker_errors_reported`).

What that keeps and what it does not:
- Folders and held data: each batch is exactly the one a local run makes for its step (same
  permutation, same augmentation seeds), made once; none is trained twice.
- Shards: each record of an epoch is made once, by the worker that reads its file, into some
  worker's batch; the batches are not the local run's (whose order is one reader's interleave
  and shuffle). An epoch of the run's steps trains on that epoch's records but at its edges,
  where the records in flight (each worker's open files and shuffle buffer: at most an eighth of
  an epoch each, sources.SERVED_SHARE_IN_FLIGHT) belong to the epochs before or after.
- The order is the workers': batches arrive as they finish, a few steps early or late, also
  across an epoch's end: a run through the service is not bit-identical to a local one, nor to
  itself. The dataset runs on past the run's last step and the run takes the first batches to
  arrive, so a few of its last steps (at most the batches in flight) may be left out for the
  first steps after it, the next epoch's.
- A resumed run asks for the batches from its checkpoint's step on: for folders and held data
  those an uninterrupted run had left, in the service's order, with the same few exceptions; for
  shards the epoch's records from position step x batch of its file order on (files wholly
  before it are not read), which are not exactly those the uninterrupted run had left, since its
  order was the workers'.
- A worker that dies loses the few batches it had taken and not delivered (4 or 5 of 300 when
  killed in our tests); later batches take their place and training goes on on the workers left.
  For shards, the records of the files it held are lost for that epoch. A dataset that ended at
  the run's last step would instead wait forever for the lost ones (a test checks both). With no
  worker left, training waits for one to join (not tested).
- A dispatcher that dies stops the batches until it is restarted with the same --work_dir: it
  reads its journal back and the run goes on (tried by hand: a 2-minute wait, then the run
  finished).
- No job name: every trainer process gets its own job. A shared job hands each batch to whichever
  reader asks first, while the workers of a multi-worker run train in lockstep and each needs its
  own part of every step; and a named job that a resumed run joined again would continue where
  the old reader stopped, not at the checkpoint. Each job makes only its trainer's part of each
  global batch (its rows of each step; for shards its own files, or its rows' positions), so the
  service's work is one global batch a step, whatever the number of trainer processes.
"""

import contextlib
import os
import re
import socket
from typing import Iterator

from absl import logging
import tensorflow as tf

from trainer.data import sources
from trainer import errors

# tf.data itself retries an unreachable dispatcher for minutes: a short connect says so at once.
REACHABLE_TIMEOUT_S = 3.0
# The whole training split goes inside the dataset's graph to every worker, and a graph holds
# at most 2 GB.
HELD_BYTES_LIMIT = 2**30
PROCESSING_MODE = "distributed_epoch"


def check_reachable(address: str, timeout_s: float = REACHABLE_TIMEOUT_S) -> None:
  """Raises a UserError at once when nothing answers at the dispatcher's HOST:PORT."""
  host, _, port = address.rpartition(":")
  try:
    with socket.create_connection((host, int(port)), timeout=timeout_s):
      pass
  except OSError as e:
    reason = e.strerror or str(e) or type(e).__name__
    raise errors.UserError(
        f"--data_service={address}: no dispatcher answers there ({reason.lower()}). Start one "
        "with `python -m trainer.data_service --dispatcher --port=PORT --work_dir=DIR` and its "
        "workers, or leave --data_service out to preprocess here.") from None


def check_servable(address: str, loaded: sources.Loaded) -> None:
  """Refuses training data that the service cannot take: a tfds stream, or held data too large
  to ship. Folders and shards are read from their files by the workers, at any size."""
  if loaded.files is not None:
    return
  if loaded.stream is not None:
    raise errors.UserError(
        f"--data_service={address} serves image folders and TFRecord shards, which its workers "
        f"read themselves, and data held in memory; {loaded.name} streams through tfds's reader "
        "on this machine (above --memory_limit_mb). Raise --memory_limit_mb if it fits, or leave "
        "--data_service out.")
  if loaded.held_bytes > HELD_BYTES_LIMIT:
    raise errors.UserError(
        f"--data_service={address}: the data ({loaded.held_bytes / 2**20:,.0f} MB held) is too "
        f"large to ship to the workers inside the dataset's graph (at most "
        f"{HELD_BYTES_LIMIT // 2**20:,} MB). Leave --data_service out.")


def log_guarantees(address: str, loaded: sources.Loaded, data_dir: str) -> None:
  """The one line that tells a user what the service keeps of a local run and what not, and
  which path its workers read."""
  if loaded.files is not None and not loaded.files.by_position:
    kept = ("each epoch's records made once, into batches of the workers' own (not the local "
            "run's), in the order they finish")
  else:
    kept = "the local run's batches, each made once, in the order its workers finish them"
  where = ""
  if loaded.files is not None:
    shared = os.path.abspath(os.path.expanduser(data_dir))
    where = f" Its workers read the training files at {shared}: mount them there on every one."
  logging.info("Training batches from the tf.data service at %s: %s: not bit-identical, nor is "
               "a resume; the last few steps, and those a lost worker held, may be replaced by "
               "the steps after them.%s", address, kept, where)


@contextlib.contextmanager
def worker_errors_reported(address: str) -> Iterator[None]:
  """Turns a service worker's failure to read a file (the shared data not mounted there, most
  often) into a UserError of one line: tf.data raises it from the training step, as a long op
  error that names the worker."""
  try:
    yield
  except (tf.errors.NotFoundError, tf.errors.PermissionDeniedError) as e:
    # "... Failed to get element from worker HOST:PORT: ...: PATH; No such file or directory".
    failed = re.search(r"Failed to get element from worker (\S+): (.*)", e.message or "")
    if not address or failed is None:
      raise
    raise errors.UserError(
        f"--data_service={address}: the service worker {failed.group(1)} cannot read the "
        f"training data ({failed.group(2).rpartition(': ')[2]}). Mount it at the same path on "
        "every service worker (python -m trainer.data_service --worker --shared_data_dir=PATH "
        "checks it at start).") from None


def served(batches: tf.data.Dataset, address: str) -> tf.data.Dataset:
  """The service's copy of `batches` (InputPipeline.service_batches), each source element (a
  step, or a shard file) made by one of its workers."""
  return batches.apply(tf.data.experimental.service.distribute(
      processing_mode=PROCESSING_MODE, service=f"grpc://{address}"))
