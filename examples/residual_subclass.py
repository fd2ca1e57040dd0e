"""A keras.Model subclass with a residual block, ending in a softmax.

  python -m trainer.main --model=examples/residual_subclass.py:build \
      --dataset=fashion_mnist --data_dir=/usr/share/datasets/fashion-mnist --epochs=3

To reload its model.keras later, Keras imports this module again: trainer.evaluate does that
from the path the run recorded (or add this folder to PYTHONPATH).
"""

import keras


class ResidualBlock(keras.layers.Layer):
  """Two 3x3 convolutions whose output is added to the block's input."""

  def __init__(self, filters, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.first = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")
    self.second = keras.layers.Conv2D(filters, 3, padding="same")

  def call(self, inputs):
    return keras.activations.relu(inputs + self.second(self.first(inputs)))

  def get_config(self):
    return {**super().get_config(), "filters": self.filters}


class ResidualNet(keras.Model):
  """A stem convolution, one residual block between poolings, and a softmax classifier."""

  def __init__(self, num_classes, filters=32, **kwargs):
    super().__init__(**kwargs)
    self.num_classes, self.filters = num_classes, filters
    self.stem = keras.layers.Conv2D(filters, 3, activation="relu")
    self.pool = keras.layers.MaxPooling2D()
    self.block = ResidualBlock(filters)
    self.block_pool = keras.layers.MaxPooling2D()
    self.flatten = keras.layers.Flatten()
    self.classes = keras.layers.Dense(num_classes, activation="softmax")

  def call(self, images):
    features = self.block_pool(self.block(self.pool(self.stem(images))))
    return self.classes(self.flatten(features))

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes, "filters": self.filters}


def build(input_shape, num_classes):
  """Returns the model for images of `input_shape` in `num_classes` classes."""
  del input_shape  # A subclassed model takes its shape from its first call.
  return ResidualNet(num_classes, name="residual_net")
