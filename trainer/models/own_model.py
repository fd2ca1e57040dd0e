"""The user's own model: --model=path/to/file.py:function or --model=package.module:function.

The function is called as `function(input_shape=(height, width, channels), num_classes=N)` under
the strategy's scope and the run's dtype policy, and must return a keras.Model built with any of
the three APIs, ending in probabilities (a softmax) or in logits. What comes back is checked on
one small batch before training, so a model that cannot take the data, or gives the wrong number
of outputs, stops the run with one line instead of a traceback deep inside the training step.
"""

import dataclasses
import importlib
import os
import sys
import types
from typing import Callable, Dict, Sequence

from absl import logging
import keras
import numpy as np

from trainer import errors


@dataclasses.dataclass(frozen=True)
class ModelFunction:
  """The user's function, the --model value that named it and the module that holds it."""

  spec: str
  function: Callable[..., object]
  module: types.ModuleType

  def custom_objects(self) -> Dict[str, type]:
    """The Keras layers and models the module defines, by name: what keras.models.load_model
    needs to rebuild a model made of them (Keras imports no module of the user's itself)."""
    return {name: value for name, value in vars(self.module).items()
            if isinstance(value, type) and issubclass(value, keras.layers.Layer)
            and value.__module__ == self.module.__name__}


def load_function(spec: str) -> ModelFunction:
  """Imports the function that `spec` ("file.py:function" or "module:function") names."""
  location, name = spec.rsplit(":", 1)
  if location.endswith(".py") or os.sep in location:
    module = _import_file(spec, os.path.abspath(os.path.expanduser(location)))
  else:
    module = _import_module(spec, location)
  function = getattr(module, name, None)
  if not callable(function):
    defined = sorted(attribute for attribute, value in vars(module).items()
                     if callable(value) and not attribute.startswith("_")
                     and getattr(value, "__module__", None) == module.__name__)
    raise errors.UserError(
        f"--model={spec}: {location} has no function {name!r}"
        + (f"; it defines {', '.join(defined)}." if defined else "."))
  return ModelFunction(spec, function, module)


def _import_file(spec: str, path: str):
  if not os.path.isfile(path):
    raise errors.UserError(f"--model={spec}: there is no file {path}.")
  folder, module_name = os.path.dirname(path), os.path.splitext(os.path.basename(path))[0]
  # Imported by its plain name from its folder, as `python file.py` would: Keras records a
  # subclassed model's module name in model.keras, and imports it by that name to reload it.
  if folder not in sys.path:
    sys.path.insert(0, folder)
  module = _import_module(spec, module_name)
  if os.path.abspath(getattr(module, "__file__", "") or "") != path:
    raise errors.UserError(
        f"--model={spec}: the name {module_name!r} is taken by {module.__file__}. Rename "
        f"{os.path.basename(path)}.")
  return module


def _import_module(spec: str, module_name: str):
  try:
    return importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name and module_name.startswith(e.name):
      raise errors.UserError(
          f"--model={spec}: there is no module {module_name} to import. Give a file path "
          "(path/to/file.py:function), or add the folder that holds the module to PYTHONPATH."
      ) from None
    raise errors.UserError(f"--model={spec}: importing {module_name} failed: {e}") from None
  except Exception as e:  # pylint: disable=broad-except  # The user's code: any error at all.
    raise errors.UserError(
        f"--model={spec}: importing {module_name} raised {type(e).__name__}: {e}") from None


@dataclasses.dataclass(frozen=True)
class BuiltModel:
  """A model ready to train: which API built it and whether it ends in logits."""

  model: keras.Model
  api: str
  from_logits: bool


def build(model_function: ModelFunction, image_shape: Sequence[int], num_classes: int,
          precision: str, seed: int) -> BuiltModel:
  """Calls the user's function and checks the model on one batch of the data's shape."""
  spec = model_function.spec
  # The user's layers take unseeded initializers: the global seed makes their weights the same
  # in every run with this seed, and in every worker.
  keras.utils.set_random_seed(seed)
  previous_policy = keras.config.dtype_policy()
  keras.config.set_dtype_policy(precision)
  try:
    model = model_function.function(input_shape=tuple(image_shape), num_classes=num_classes)
  except errors.UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # The user's code: any error at all.
    raise errors.UserError(f"--model={spec} raised {type(e).__name__}: {e}") from None
  finally:
    keras.config.set_dtype_policy(previous_policy)
  if not isinstance(model, keras.Model):
    raise errors.UserError(
        f"--model={spec} returned {type(model).__name__}, not a keras.Model. Return the model "
        "itself (keras.Sequential, keras.Model(inputs, outputs) or a keras.Model subclass).")
  api = detect_api(model)
  from_logits = _check_outputs(model, spec, image_shape, num_classes)
  if type(model).train_step is not keras.Model.train_step:
    logging.warning("%s overrides train_step; the harness runs its own training loop and does "
                    "not call it.", type(model).__name__)
  return BuiltModel(model, api, from_logits)


def detect_api(model: keras.Model) -> str:
  """Which Keras API built `model`: sequential, functional or subclass."""
  if isinstance(model, keras.Sequential):
    return "sequential"
  # A graph of layers (keras.Model(inputs, outputs), or a subclass that calls it so) has inputs.
  if getattr(model, "inputs", None):
    return "functional"
  return "subclass"


def _check_outputs(model: keras.Model, spec: str, image_shape: Sequence[int],
                   num_classes: int) -> bool:
  """Runs the model on two images of the data's shape; returns True if it outputs logits.

  This first call also creates the weights of a subclassed model that has no build().
  """
  images = np.random.default_rng(0).random((2, *image_shape), dtype=np.float32)
  shape = ", ".join(map(str, image_shape))
  try:
    outputs = model(images, training=False)
  except Exception as e:  # pylint: disable=broad-except  # The user's code: any error at all.
    message = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise errors.UserError(
        f"--model={spec} cannot take the data's images, float32 batches of shape (batch, "
        f"{shape}): {type(e).__name__}: {message}. Build the model for the input_shape it "
        "is given.") from None
  outputs_shape = tuple(getattr(outputs, "shape", ()))
  if outputs_shape != (2, num_classes):
    raise errors.UserError(
        f"--model={spec} outputs shape {_batch_shape(outputs_shape)}; it must output (batch, "
        f"{num_classes}), one value per class of the data. Use the num_classes it is given.")
  values = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(outputs, "float32")))
  is_probabilities = bool((values >= 0).all() and np.allclose(values.sum(-1), 1.0, atol=1e-2))
  return not is_probabilities


def _batch_shape(shape: tuple) -> str:
  return "(" + ", ".join(["batch", *map(str, shape[1:])]) + ")" if shape else "of no tensor"
