"""A Functional network with two branches: a convolution branch and a dense branch, joined.

  python -m trainer.main --model=examples/two_branch_functional.py:build \
      --dataset=fashion_mnist --data_dir=/usr/share/datasets/fashion-mnist --epochs=3
"""

import keras


def build(input_shape, num_classes):
  """Returns the model for images of `input_shape` in `num_classes` classes."""
  images = keras.Input(shape=input_shape, name="images")
  # Local patterns: two convolution blocks.
  local = keras.layers.Conv2D(32, 3, activation="relu", name="conv1")(images)
  local = keras.layers.MaxPooling2D(name="pool1")(local)
  local = keras.layers.Conv2D(64, 3, activation="relu", name="conv2")(local)
  local = keras.layers.GlobalAveragePooling2D(name="pool2")(local)
  # The whole image at once: a dense layer on the raw pixels.
  whole = keras.layers.Flatten(name="flatten")(images)
  whole = keras.layers.Dense(128, activation="relu", name="dense")(whole)
  joined = keras.layers.Concatenate(name="join")([local, whole])
  probabilities = keras.layers.Dense(num_classes, activation="softmax", name="classes")(joined)
  return keras.Model(images, probabilities, name="two_branch")
