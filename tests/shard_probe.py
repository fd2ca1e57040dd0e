"""Run as one worker of a cluster (TF_CONFIG set): prints which training examples it receives.

Used by tests/test_multi_worker.py to check that workers see distinct shards of each global batch.
Prints one JSON line: {"worker": I, "batches": [[image checksum, ...] per global batch]}.
"""

import json
import os
import sys

import tensorflow as tf

from trainer import config as config_lib
from trainer.data import input_pipeline
from trainer.distribute import cluster


def main(data_dir: str, global_batch_size: int, num_batches: int) -> None:
  tf_config = cluster.parse_tf_config(os.environ.get("TF_CONFIG"))
  strategy = cluster.make_multi_worker_strategy(tf_config)
  pipeline = input_pipeline.make_input_pipeline(config_lib.Config.from_flags(
      dataset="fashion_mnist", data_dir=data_dir, batch_size=global_batch_size).data)
  dataset = strategy.experimental_distribute_dataset(pipeline.train_dataset(epoch=0))
  batches = []
  for images, _ in dataset:
    local = strategy.experimental_local_results(images)
    batches.append([float(tf.reduce_sum(image)) for part in local for image in part])
    if len(batches) == num_batches:
      break
  print(json.dumps({"worker": tf_config["task"]["index"], "batches": batches}), flush=True)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
