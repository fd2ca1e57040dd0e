"""The blog post's whole script, the benchmark's time-to-accuracy peer.

The post's code as it was (Sequential Flatten -> Dense(256, relu) -> Dense(10, softmax), Adam,
sparse categorical cross-entropy, fit for 10 epochs at batch 32, evaluate), with one change:
the data comes from MNIST-format IDX files, since keras.datasets downloads and this machine may
be offline. It prints one JSON line with the test accuracy last.

  python scripts/blog_script.py --data_dir=/usr/share/datasets/fashion-mnist
"""

import argparse
import gzip
import json
import os

import numpy as np
import tensorflow as tf


def load_idx(path):
  """An IDX file (gzipped or not) as a uint8 array: magic, dimensions, then the bytes."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  ndim = data[3]
  shape = np.frombuffer(data, ">u4", ndim, 4)
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_data(data_dir):
  """keras.datasets.mnist.load_data(), from a folder of the four IDX files."""
  def read(stem):
    name = next(n for n in os.listdir(data_dir) if n.startswith(stem))
    return load_idx(os.path.join(data_dir, name))
  return ((read("train-images"), read("train-labels")),
          (read("t10k-images"), read("t10k-labels")))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--train_examples", type=int, default=0, help="0 is all of them.")
  args = parser.parse_args()

  (x_train, y_train), (x_test, y_test) = load_data(args.data_dir)
  if args.train_examples:
    x_train, y_train = x_train[:args.train_examples], y_train[:args.train_examples]
  x_train, x_test = x_train / 255.0, x_test / 255.0

  model = tf.keras.models.Sequential([
      tf.keras.layers.Flatten(input_shape=(28, 28)),
      tf.keras.layers.Dense(256, activation="relu"),
      tf.keras.layers.Dense(10, activation="softmax"),
  ])
  model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
  model.fit(x_train, y_train, epochs=args.epochs, batch_size=32)
  test_loss, test_accuracy = model.evaluate(x_test, y_test)
  print(json.dumps({"test_accuracy": test_accuracy, "test_loss": test_loss}))


if __name__ == "__main__":
  main()
