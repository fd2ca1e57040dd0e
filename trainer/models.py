"""The one classifier of this project, Flatten -> Dense(relu) -> Dense -> softmax, built three ways.

All three builders give the same layers, parameter count and, from the same seed, the same initial
weights, so any difference between them in a run comes from the API alone.
"""

from typing import Optional, Sequence

import keras

from trainer import config
from trainer import input_pipeline


def _layer_args(hidden_units: int, num_classes: int, seed: int, precision: str) -> dict:
  """Returns the constructor arguments of the three layers, in order, shared by every builder."""
  # Seeded initializers (rather than a global seed) make the weights independent of build order.
  return dict(
      hidden=dict(units=hidden_units, activation="relu", dtype=precision, name="hidden",
                  kernel_initializer=keras.initializers.GlorotUniform(seed=seed)),
      logits=dict(units=num_classes, dtype=precision, name="logits",
                  kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1)),
      # Softmax in float32 keeps the probabilities and the loss accurate under mixed precision.
      softmax=dict(activation="softmax", dtype="float32", name="softmax"),
  )


def build_sequential(image_shape: Sequence[int], num_classes: int, hidden_units: int, seed: int,
                     precision: str) -> keras.Model:
  """Returns the classifier as a keras.Sequential."""
  args = _layer_args(hidden_units, num_classes, seed, precision)
  return keras.Sequential([
      keras.Input(shape=tuple(image_shape), name="images"),
      keras.layers.Flatten(name="flatten"),
      keras.layers.Dense(**args["hidden"]),
      keras.layers.Dense(**args["logits"]),
      keras.layers.Activation(**args["softmax"]),
  ], name="sequential_classifier")


def build_functional(image_shape: Sequence[int], num_classes: int, hidden_units: int, seed: int,
                     precision: str) -> keras.Model:
  """Returns the classifier built with the Functional API."""
  args = _layer_args(hidden_units, num_classes, seed, precision)
  images = keras.Input(shape=tuple(image_shape), name="images")
  features = keras.layers.Flatten(name="flatten")(images)
  features = keras.layers.Dense(**args["hidden"])(features)
  logits = keras.layers.Dense(**args["logits"])(features)
  probabilities = keras.layers.Activation(**args["softmax"])(logits)
  return keras.Model(images, probabilities, name="functional_classifier")


@keras.saving.register_keras_serializable(package="trainer")
class SubclassClassifier(keras.Model):
  """The classifier as a keras.Model subclass; its layers are made in __init__, never in call()."""

  def __init__(self, hidden_units: int = 256, seed: int = 0, precision: str = "float32",
               num_classes: int = input_pipeline.NUM_CLASSES, **kwargs):
    super().__init__(**kwargs)
    self.hidden_units, self.seed, self.precision = hidden_units, seed, precision
    self.num_classes = num_classes
    args = _layer_args(hidden_units, num_classes, seed, precision)
    self.flatten = keras.layers.Flatten(name="flatten")
    self.hidden = keras.layers.Dense(**args["hidden"])
    self.logits = keras.layers.Dense(**args["logits"])
    self.softmax = keras.layers.Activation(**args["softmax"])

  def build(self, input_shape):
    # Building each layer from the input shape makes the weights exist before the first call, as
    # in the other two APIs, so all three can be compared and restored the same way.
    self.flatten.build(input_shape)
    shape = self.flatten.compute_output_shape(input_shape)
    for layer in (self.hidden, self.logits, self.softmax):
      layer.build(shape)
      shape = layer.compute_output_shape(shape)

  def call(self, images):
    return self.softmax(self.logits(self.hidden(self.flatten(images))))

  def get_config(self) -> dict:
    return {**super().get_config(), "hidden_units": self.hidden_units, "seed": self.seed,
            "precision": self.precision, "num_classes": self.num_classes}


def build_subclass(image_shape: Sequence[int], num_classes: int, hidden_units: int, seed: int,
                   precision: str) -> keras.Model:
  """Returns the classifier as a keras.Model subclass, built so its weights exist."""
  model = SubclassClassifier(hidden_units, seed, precision, num_classes,
                             name="subclass_classifier")
  model.build((None, *image_shape))
  return model


_BUILDERS = {"sequential": build_sequential, "functional": build_functional,
             "subclass": build_subclass}


def build_model(api: str, hidden_units: int = 256, seed: int = 0,
                precision: Optional[str] = "float32",
                image_shape: Sequence[int] = input_pipeline.IMAGE_SHAPE,
                num_classes: int = input_pipeline.NUM_CLASSES) -> keras.Model:
  """Returns the classifier built with `api` (one of config.APIS) under the dtype policy
  `precision`, for images of `image_shape` (height, width, channels) in `num_classes` classes."""
  if api not in _BUILDERS:
    raise ValueError(f"Unknown model API {api!r}; expected one of {', '.join(config.APIS)}.")
  return _BUILDERS[api](image_shape, num_classes, hidden_units, seed, precision or "float32")
