"""Keras Applications by name: --model=applications.ResNet50, MobileNetV2, EfficientNetB0, ...

Any constructor in keras.applications is built untrained (weights=None: nothing downloads) for
the data's input shape and class count, and then trains like the user's own model (it is one,
a Functional model Keras wrote): checked on one batch, its API recorded as functional.
"""

import difflib
import inspect
import re
from typing import List, Sequence

import keras

from trainer import config
from trainer import errors
from trainer.models import own_model

PREFIX = config.APPLICATIONS_PREFIX


def constructor_names() -> List[str]:
  """Every model constructor keras.applications offers (ResNet50, MobileNetV2, ...)."""
  return sorted(name for name in dir(keras.applications)
                if name[:1].isupper() and callable(getattr(keras.applications, name)))


def load_function(spec: str) -> own_model.ModelFunction:
  """The constructor that `spec` (applications.NAME) names, as a model function that builds
  it untrained for (input_shape, num_classes); an unknown name lists the close ones."""
  name = spec[len(PREFIX):]
  names = constructor_names()
  if name not in names:
    # Compared without case, closest first: "mobilenetv2" finds MobileNetV2 before MobileNet.
    by_lower = {n.lower(): n for n in names}
    close = [by_lower[n] for n in difflib.get_close_matches(name.lower(), by_lower, n=4,
                                                             cutoff=0.6)]
    hint = (f" Did you mean {', '.join(PREFIX + n for n in close)}?" if close else
            f" It has {', '.join(names[:8])}, ... ({len(names)} in all).")
    raise errors.UserError(f"--model={spec}: keras.applications has no model {name!r}.{hint}")
  constructor = getattr(keras.applications, name)

  def build(input_shape: Sequence[int], num_classes: int) -> keras.Model:
    options = {"weights": None, "input_shape": tuple(input_shape), "classes": num_classes}
    if "include_preprocessing" in inspect.signature(constructor).parameters:
      # The harness feeds images scaled to [0, 1]; the built-in rescaling expects 0-255.
      options["include_preprocessing"] = False
    try:
      return constructor(**options)
    except ValueError as e:
      minimum = re.search(r"at least (\d+)x(\d+)", str(e))
      if minimum:
        height, width = minimum.groups()
        raise errors.UserError(
            f"--model={spec} needs images of at least {height}x{width} pixels; the data's are "
            f"{input_shape[0]}x{input_shape[1]}. Resize them (--image_size={height},{width} for "
            "an image folder or tfds dataset) or choose a model for smaller images, such as "
            "resnet18.") from None
      raise errors.UserError(f"--model={spec} refuses the data's shape "
                             f"{tuple(input_shape)}: {e}") from None

  return own_model.ModelFunction(spec, build, module=keras.applications)
