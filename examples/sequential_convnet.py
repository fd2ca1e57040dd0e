"""A small convnet written with keras.Sequential, ending in logits (no softmax).

  python -m trainer.main --model=examples/sequential_convnet.py:build \
      --dataset=fashion_mnist --data_dir=/usr/share/datasets/fashion-mnist --epochs=3

The harness sees that the outputs are not probabilities and trains with from_logits=True.
"""

import keras


def build(input_shape, num_classes):
  """Returns the model for images of `input_shape` in `num_classes` classes."""
  return keras.Sequential([
      keras.Input(shape=input_shape),
      keras.layers.Conv2D(32, 3, activation="relu"),
      keras.layers.MaxPooling2D(),
      keras.layers.Conv2D(64, 3, activation="relu"),
      keras.layers.MaxPooling2D(),
      keras.layers.Flatten(),
      keras.layers.Dense(128, activation="relu"),
      keras.layers.Dense(num_classes),
  ])
