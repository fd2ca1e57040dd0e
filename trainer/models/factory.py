"""Which model a run trains: a built-in network in one API, a Keras Application, or your own.

  mlp, cnn                   trainer.models.simple
  resnet18, resnet34, resnet50  trainer.models.resnet
  applications.NAME          trainer.models.applications (any keras.applications constructor)
  file.py:function, module:function  trainer.models.own_model
"""

from typing import Callable, Optional, Sequence

import keras

from trainer import config as config_lib
from trainer.models import applications
from trainer.models import own_model
from trainer.models import resnet
from trainer.models import simple

ModelBuilder = Callable[[Sequence[int], int, str], own_model.BuiltModel]


def build_model(network: str, api: str, image_shape: Sequence[int], num_classes: int,
                seed: int = 0, precision: str = "float32", hidden_units: int = 256,
                sync_batchnorm: bool = False) -> keras.Model:
  """Returns the built-in `network` (one of config.NETWORKS) built with `api` (one of
  config.APIS) under the dtype policy `precision`."""
  if network in resnet.RESNET_SPECS:
    if api not in resnet.BUILDERS:
      raise ValueError(f"Unknown model API {api!r}; expected one of {', '.join(config_lib.APIS)}.")
    return resnet.BUILDERS[api](network, image_shape, num_classes, seed, precision,
                                sync_batchnorm)
  return simple.build_model(api, hidden_units, seed, precision, image_shape, num_classes, network)


def model_builder(model: config_lib.ModelConfig, seed: int) -> ModelBuilder:
  """Returns what builds `model` with initial weights from `seed` for (image_shape, num_classes,
  precision).

  The user's own module is imported here, and an application's name checked, so a --model that
  names nothing fails before any data loads.
  """
  if config_lib.brings_its_own_api(model.name):
    function = (applications.load_function(model.name) if model.application
                else own_model.load_function(model.name))
    return lambda image_shape, num_classes, precision: own_model.build(
        function, image_shape, num_classes, precision, seed)
  return lambda image_shape, num_classes, precision: own_model.BuiltModel(
      build_model(model.name, model.api, image_shape, num_classes, seed, precision,
                  model.hidden_units, model.sync_batchnorm),
      api=model.api, from_logits=False)


def parameter_count(model: config_lib.ModelConfig, image_shape: Sequence[int],
                    num_classes: int) -> Optional[int]:
  """The parameter count of the built-in mlp or cnn, computed without building it (for a model
  too large to build); None for every other model."""
  if model.name not in simple.LAYERS:
    return None
  return simple.parameter_count(model.name, image_shape, num_classes, model.hidden_units)
