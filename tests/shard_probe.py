"""Run as one worker of a cluster (TF_CONFIG set): prints which training examples it receives.

Used by tests/test_multi_worker.py to check that each worker receives its slice of each global
batch, made by its own pipeline as a run makes it (distribute_per_process).
Prints one JSON line: {"worker": I, "batches": [[image digest, ...] per global batch]}, where an
image's digest is image_digest's.
"""

import hashlib
import json
import os
import sys

import numpy as np

from trainer import config as config_lib
from trainer.data import input_pipeline
from trainer.distribute import cluster
from trainer.distribute import distribution


def image_digest(image) -> str:
  """The SHA-256 of an image's float32 pixels: equal only for bit-identical images."""
  return hashlib.sha256(np.asarray(image, np.float32).tobytes()).hexdigest()


def main(data_dir: str, global_batch_size: int, num_batches: int) -> None:
  tf_config = cluster.parse_tf_config(os.environ.get("TF_CONFIG"))
  strategy = cluster.make_multi_worker_strategy(tf_config)
  input_index, num_inputs = cluster.input_position(tf_config)
  pipeline = input_pipeline.make_input_pipeline(config_lib.Config.from_flags(
      dataset="fashion_mnist", data_dir=data_dir, batch_size=global_batch_size,
      augment="crop_flip").data, input_index, num_inputs)
  dataset = distribution.distribute_per_process(strategy, pipeline.train_dataset(epoch=0),
                                                global_batch_size)
  batches = []
  for images, _ in dataset:
    local = strategy.experimental_local_results(images)
    batches.append([image_digest(image) for part in local for image in part])
    if len(batches) == num_batches:
      break
  print(json.dumps({"worker": tf_config["task"]["index"], "batches": batches}), flush=True)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
