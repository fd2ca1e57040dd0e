"""Training batches made by a tf.data service cluster (--data_service), on other machines.

The trainer hands the service a dataset with one element per global step, each computed from its
step alone (`InputPipeline.batches_by_step`), in the `distributed_epoch` processing mode: the
dispatcher hands steps to whichever worker asks next, so each batch is made once, by one worker,
and adding workers divides the preprocessing. The other modes do not fit: `parallel_epochs` makes
every batch on every worker (each example N times an epoch), and the static sharding policies
need a fixed list of workers and stop when one of them is lost.

What that keeps and what it does not:
- Each batch is exactly the one a local run makes for its step (same permutation, same
  augmentation seeds), made once; none is trained twice.
- They arrive in the order the workers finish them, so a batch may come a few steps early or
  late, also across an epoch's end: a run through the service is not bit-identical to a local
  one, nor to itself. The dataset runs on past the run's last step and the run takes the first
  batches to arrive, so a few of its last steps (at most the batches in flight) may be left out
  for the first steps after it, the next epoch's.
- A resumed run asks for the batches from its checkpoint's step on: those an uninterrupted run
  had left, in the service's order, with the same few exceptions.
- A worker that dies loses the few batches it had taken and not delivered (4 or 5 of 300 when
  killed in our tests); later batches take their place and training goes on on the workers left.
  A dataset that ended at the run's last step would instead wait forever for the lost ones (a
  test checks both). With no worker left, training waits for one to join (not tested).
- A dispatcher that dies stops the batches until it is restarted with the same --work_dir: it
  reads its journal back and the run goes on (tried by hand: a 2-minute wait, then the run
  finished).
- No job name: every trainer process gets its own job. A shared job hands each batch to whichever
  reader asks first, while the workers of a multi-worker run train in lockstep and each needs its
  own part of every step; and a named job that a resumed run joined again would continue where
  the old reader stopped, not at the checkpoint. Each job makes only its trainer's slice of each
  global batch (InputPipeline.batches_by_step is this process's), so the service's work is one
  global batch a step, whatever the number of trainer processes.
"""

import socket

from absl import logging
import tensorflow as tf

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


def check_servable(address: str, streamed: bool, held_bytes: int) -> None:
  """Refuses training data that the service cannot take: streamed, or too large to ship."""
  if streamed:
    raise errors.UserError(
        f"--data_service={address} serves training data held in memory, and this dataset "
        "streams from disk (above --memory_limit_mb). Raise --memory_limit_mb if it fits, or "
        "leave --data_service out.")
  if held_bytes > HELD_BYTES_LIMIT:
    raise errors.UserError(
        f"--data_service={address}: the data ({held_bytes / 2**20:,.0f} MB held) is too "
        f"large to ship to the workers inside the dataset's graph (at most "
        f"{HELD_BYTES_LIMIT // 2**20:,} MB). Leave --data_service out.")


def log_guarantees(address: str) -> None:
  """The one line that tells a user what the service keeps of a local run and what not."""
  logging.info("Training batches from the tf.data service at %s: the local run's batches, each "
               "made once, in the order its workers finish them: not bit-identical, nor is a "
               "resume; the last few steps, and those a lost worker held, may be replaced by the "
               "steps after them.", address)


def served(batches_by_step: tf.data.Dataset, address: str) -> tf.data.Dataset:
  """The service's copy of `batches_by_step`, each step's batch made by one of its workers."""
  return batches_by_step.apply(tf.data.experimental.service.distribute(
      processing_mode=PROCESSING_MODE, service=f"grpc://{address}"))
