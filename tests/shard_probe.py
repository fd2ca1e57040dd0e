"""The trainer's command line, as one worker of a cluster, printing which training examples its
replicas receive first.

  python -m tests.shard_probe NUM_BATCHES FLAGS...

Runs trainer.main with FLAGS. When the run hands this worker's training batches to the strategy
(distribution.distribute_per_process), it reads the first NUM_BATCHES of them as the strategy
gives them to this worker's replicas, from a second iterator over the same batches, and prints
one line before training on: "shard probe: " and the JSON {"batches": [[image digest, ...] per
global batch]}, this worker's rows replica by replica. Used by tests/test_multi_worker.py to
check, in a real run, that each worker receives its slice of each global batch.
"""

import hashlib
import json
import sys

import numpy as np

from tests import patched_trainer

PREFIX = "shard probe: "


def image_digest(image) -> str:
  """The SHA-256 of an image's float32 pixels: equal only for bit-identical images."""
  return hashlib.sha256(np.asarray(image, np.float32).tobytes()).hexdigest()


def main() -> None:
  num_batches = int(sys.argv[1])

  def probe() -> None:
    from trainer.distribute import distribution  # pylint: disable=g-import-not-at-top
    distribute = distribution.distribute_per_process

    def distribute_and_probe(strategy, dataset, global_batch_size):
      batches = []
      for images, _ in distribute(strategy, dataset, global_batch_size):
        batches.append([image_digest(image) for part in strategy.experimental_local_results(
            images) for image in part.numpy()])
        if len(batches) == num_batches:
          break
      print(PREFIX + json.dumps({"batches": batches}), flush=True)
      return distribute(strategy, dataset, global_batch_size)

    distribution.distribute_per_process = distribute_and_probe

  patched_trainer.run(sys.argv[2:], probe)


if __name__ == "__main__":
  main()
