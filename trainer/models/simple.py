"""The blog's mlp and a small cnn, each network written with all three Keras APIs.

  mlp: Flatten -> Dense(hidden_units, relu) -> Dense(classes) -> softmax (the blog's network)
  cnn: two Conv(3x3, same padding, relu) + MaxPool(2) blocks -> Flatten
       -> Dense(hidden_units, relu) -> Dense(classes) -> softmax

For one network the three builders give the same layers, names, parameter count and, from the
same seed, the same initial weights, so any difference between them in a run comes from the API
alone. trainer.models.factory picks between these, the ResNets, Keras Applications and the
user's own model.
"""

from typing import List, Optional, Sequence

import keras

from trainer import config
from trainer.data import input_pipeline


def _glorot(seed: int) -> keras.initializers.Initializer:
  # Seeded initializers (rather than a global seed) make the weights independent of build order.
  return keras.initializers.GlorotUniform(seed=seed)


def _head(hidden_units: int, num_classes: int, seed: int, precision: str) -> List[keras.Layer]:
  """The layers every network ends with: Flatten, the hidden Dense, the logits, the softmax."""
  return [
      keras.layers.Flatten(name="flatten"),
      keras.layers.Dense(hidden_units, activation="relu", dtype=precision, name="hidden",
                         kernel_initializer=_glorot(seed)),
      keras.layers.Dense(num_classes, dtype=precision, name="logits",
                         kernel_initializer=_glorot(seed + 1)),
      # Softmax in float32 keeps the probabilities and the loss accurate under mixed precision.
      keras.layers.Activation("softmax", dtype="float32", name="softmax"),
  ]


def mlp_layers(hidden_units: int, num_classes: int, seed: int, precision: str) -> List[keras.Layer]:
  """The mlp's layers, in order, as every builder uses them."""
  return _head(hidden_units, num_classes, seed, precision)


def cnn_layers(hidden_units: int, num_classes: int, seed: int, precision: str) -> List[keras.Layer]:
  """The cnn's layers, in order, as every builder uses them."""
  def conv(filters, name, layer_seed):
    # "same" padding keeps the border pixels: on Fashion-MNIST it reached 0.906 in 3 epochs
    # where "valid" reached 0.891 (batch 64, learning rate 1e-3).
    return keras.layers.Conv2D(filters, 3, padding="same", activation="relu", dtype=precision,
                               name=name, kernel_initializer=_glorot(layer_seed))
  # Seeds 0 and 1 offsets belong to the head; the convolutions take the next ones.
  def pool(name):
    return keras.layers.MaxPooling2D(2, dtype=precision, name=name)
  return [conv(32, "conv1", seed + 2), pool("pool1"), conv(64, "conv2", seed + 3), pool("pool2"),
          *_head(hidden_units, num_classes, seed, precision)]


LAYERS = {"mlp": mlp_layers, "cnn": cnn_layers}


def _build_layers(layers: Sequence[keras.Layer], input_shape) -> None:
  # Building each layer from the input shape makes a subclassed model's weights exist before its
  # first call, as in the other two APIs, so all three can be compared and restored the same way.
  shape = input_shape
  for layer in layers:
    layer.build(shape)
    shape = layer.compute_output_shape(shape)


# ---------------------------------------------------------------- Sequential and Functional.
def build_sequential(network: str, image_shape: Sequence[int], num_classes: int,
                     hidden_units: int, seed: int, precision: str) -> keras.Model:
  """Returns `network` as a keras.Sequential."""
  layers = LAYERS[network](hidden_units, num_classes, seed, precision)
  return keras.Sequential([keras.Input(shape=tuple(image_shape), name="images"), *layers],
                          name=f"sequential_{network}")


def build_functional(network: str, image_shape: Sequence[int], num_classes: int,
                     hidden_units: int, seed: int, precision: str) -> keras.Model:
  """Returns `network` built with the Functional API."""
  images = keras.Input(shape=tuple(image_shape), name="images")
  outputs = images
  for layer in LAYERS[network](hidden_units, num_classes, seed, precision):
    outputs = layer(outputs)
  return keras.Model(images, outputs, name=f"functional_{network}")


# ---------------------------------------------------------------- Subclassed.
@keras.saving.register_keras_serializable(package="trainer")
class SubclassClassifier(keras.Model):
  """The mlp as a keras.Model subclass; its layers are made in __init__, never in call()."""

  def __init__(self, hidden_units: int = 256, seed: int = 0, precision: str = "float32",
               num_classes: int = input_pipeline.NUM_CLASSES, **kwargs):
    super().__init__(**kwargs)
    self.hidden_units, self.seed, self.precision = hidden_units, seed, precision
    self.num_classes = num_classes
    self.flatten, self.hidden, self.logits, self.softmax = mlp_layers(
        hidden_units, num_classes, seed, precision)

  def build(self, input_shape):
    _build_layers([self.flatten, self.hidden, self.logits, self.softmax], input_shape)

  def call(self, images):
    return self.softmax(self.logits(self.hidden(self.flatten(images))))

  def get_config(self) -> dict:
    return {**super().get_config(), "hidden_units": self.hidden_units, "seed": self.seed,
            "precision": self.precision, "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="trainer")
class SubclassConvNet(SubclassClassifier):
  """The cnn as a keras.Model subclass: the mlp's head after two convolution blocks."""

  def __init__(self, hidden_units: int = 256, seed: int = 0, precision: str = "float32",
               num_classes: int = input_pipeline.NUM_CLASSES, **kwargs):
    keras.Model.__init__(self, **kwargs)
    self.hidden_units, self.seed, self.precision = hidden_units, seed, precision
    self.num_classes = num_classes
    (self.conv1, self.pool1, self.conv2, self.pool2,
     self.flatten, self.hidden, self.logits, self.softmax) = cnn_layers(
         hidden_units, num_classes, seed, precision)

  def build(self, input_shape):
    _build_layers([self.conv1, self.pool1, self.conv2, self.pool2, self.flatten, self.hidden,
                   self.logits, self.softmax], input_shape)

  def call(self, images):
    features = self.pool1(self.conv1(images))
    features = self.pool2(self.conv2(features))
    return super().call(features)


_SUBCLASSES = {"mlp": SubclassClassifier, "cnn": SubclassConvNet}


def build_subclass(network: str, image_shape: Sequence[int], num_classes: int,
                   hidden_units: int, seed: int, precision: str) -> keras.Model:
  """Returns `network` as a keras.Model subclass, built so its weights exist."""
  model = _SUBCLASSES[network](hidden_units, seed, precision, num_classes,
                               name=f"subclass_{network}")
  model.build((None, *image_shape))
  return model


_BUILDERS = {"sequential": build_sequential, "functional": build_functional,
             "subclass": build_subclass}


def build_model(api: str, hidden_units: int = 256, seed: int = 0,
                precision: Optional[str] = "float32",
                image_shape: Sequence[int] = input_pipeline.IMAGE_SHAPE,
                num_classes: int = input_pipeline.NUM_CLASSES,
                network: str = "mlp") -> keras.Model:
  """Returns the built-in `network` (mlp or cnn) built with `api` (one of
  config.APIS) under the dtype policy `precision`, for images of `image_shape` (height, width,
  channels) in `num_classes` classes."""
  if api not in _BUILDERS:
    raise ValueError(f"Unknown model API {api!r}; expected one of {', '.join(config.APIS)}.")
  if network not in LAYERS:
    raise ValueError(f"Unknown network {network!r}; expected one of {', '.join(LAYERS)}.")
  return _BUILDERS[api](network, image_shape, num_classes, hidden_units, seed,
                        precision or "float32")


def parameter_count(network: str, image_shape: Sequence[int], num_classes: int,
                    hidden_units: int) -> int:
  """The parameter count of a built-in network, computed without building it (for a model too
  large to build)."""
  height, width, channels = image_shape
  features = height * width * channels
  convolutions = 0
  if network == "cnn":
    convolutions = (9 * channels * 32 + 32) + (9 * 32 * 64 + 64)
    features = (height // 4) * (width // 4) * 64
  return convolutions + features * hidden_units + hidden_units + hidden_units * num_classes + \
      num_classes
