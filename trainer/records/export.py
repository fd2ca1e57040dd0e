"""The finished model as files: model.keras (Keras) and saved_model/ (inference SavedModel,
left out under --noexport_saved_model)."""

import os
import shutil

from typing import Optional, Sequence

from absl import logging
import keras
import tensorflow as tf

# Imported to register the built-in models' own classes, which load_keras_model needs.
from trainer import safe_files
from trainer.models import factory  # pylint: disable=unused-import
from trainer.records import workdir as workdir_lib


def export_model(model: keras.Model, workdir: str, image_shape: Sequence[int],
                 options: Optional[dict] = None, saved_model: bool = True) -> dict:
  """Writes the exports into `workdir`, each through a rename so none is ever half-written,
  and returns their paths by format.

  The SavedModel's `serve` takes float32 images of `image_shape` in [0, 1], batched;
  `options` are the backend's for model.export (interface.Backend.export_options). Without
  `saved_model` only model.keras is written, and a SavedModel of an earlier end of the run is
  removed: it would serve older weights than model.keras holds.
  """
  saved_model_path = os.path.join(workdir, workdir_lib.SAVED_MODEL_DIR)
  if not saved_model and os.path.isdir(saved_model_path):
    # Renamed away whole first: a crash leaves no half of it beside the new model.keras.
    os.replace(saved_model_path, saved_model_path + ".old")
    logging.info("Removed %s of an earlier end of the run: --noexport_saved_model.",
                 saved_model_path)
  shutil.rmtree(saved_model_path + ".old", ignore_errors=True)

  keras_path = os.path.join(workdir, workdir_lib.KERAS_FILE)
  with safe_files.writing("model.keras export", keras_path, partial=[keras_path + ".tmp.keras"]):
    model.save(keras_path + ".tmp.keras")
    os.replace(keras_path + ".tmp.keras", keras_path)
  if not saved_model:
    return {"keras": keras_path}

  staging = saved_model_path + ".tmp"
  shutil.rmtree(staging, ignore_errors=True)
  with safe_files.writing("SavedModel export", saved_model_path, partial=[staging]):
    # The signature is given, not inferred: a subclassed model without build() has no record
    # of the shape it was called with.
    model.export(staging, format="tf_saved_model", verbose=False, input_signature=[
        tf.TensorSpec((None, *image_shape), tf.float32, name="images")], **(options or {}))
    shutil.rmtree(saved_model_path, ignore_errors=True)
    os.replace(staging, saved_model_path)
  return {"keras": keras_path, "saved_model": saved_model_path}


def load_keras_model(workdir: str, custom_objects: Optional[dict] = None) -> keras.Model:
  """Loads workdir/model.keras. The built-in subclassed models are registered, so all three
  APIs load; a user's own layers and models come in `custom_objects`."""
  return keras.models.load_model(os.path.join(workdir, workdir_lib.KERAS_FILE),
                                 custom_objects=custom_objects)


def load_saved_model(workdir: str):
  """Loads workdir/saved_model; call its `serve` while the returned object is referenced."""
  return tf.saved_model.load(os.path.join(workdir, workdir_lib.SAVED_MODEL_DIR))


def has_export(workdir: str) -> bool:
  """True when the run in `workdir` has written its model.keras."""
  return os.path.exists(os.path.join(workdir, workdir_lib.KERAS_FILE))
