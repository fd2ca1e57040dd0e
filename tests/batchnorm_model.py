"""A small convnet with the ResNets' BatchNormalization, for tests of its moving statistics
under XLA over several replicas without compiling a whole ResNet (minutes on a CPU).

  python -m trainer.main --model=tests/batchnorm_model.py:build --strategy=mirrored ...
"""

import keras

from trainer.models import resnet


def build(input_shape, num_classes):
  """One convolution, the ResNets' BatchNormalization (named "bn"), pooling and logits."""
  return keras.Sequential([
      keras.Input(shape=input_shape),
      keras.layers.Conv2D(8, 3, padding="same", use_bias=False),
      resnet.BatchNormalization(name="bn"),
      keras.layers.ReLU(),
      keras.layers.GlobalAveragePooling2D(),
      keras.layers.Dense(num_classes),
  ])
