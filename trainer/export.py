"""The finished model as files: model.keras (Keras) and saved_model/ (inference SavedModel)."""

import os
import shutil

import keras

from trainer import models  # pylint: disable=unused-import  # Registers SubclassClassifier.
from trainer import workdir as workdir_lib


def export_model(model: keras.Model, workdir: str) -> dict:
  """Writes both exports into `workdir`, each through a rename so none is ever half-written."""
  keras_path = os.path.join(workdir, workdir_lib.KERAS_FILE)
  model.save(keras_path + ".tmp.keras")
  os.replace(keras_path + ".tmp.keras", keras_path)

  saved_model_path = os.path.join(workdir, workdir_lib.SAVED_MODEL_DIR)
  staging = saved_model_path + ".tmp"
  shutil.rmtree(staging, ignore_errors=True)
  model.export(staging, format="tf_saved_model", verbose=False)
  shutil.rmtree(saved_model_path, ignore_errors=True)
  os.replace(staging, saved_model_path)
  return {"keras": keras_path, "saved_model": saved_model_path}


def load_keras_model(workdir: str) -> keras.Model:
  """Loads workdir/model.keras; the subclassed model is registered, so all three APIs load."""
  return keras.models.load_model(os.path.join(workdir, workdir_lib.KERAS_FILE))


def load_saved_model(workdir: str):
  """Loads workdir/saved_model; call its `serve` while the returned object is referenced."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.saved_model.load(os.path.join(workdir, workdir_lib.SAVED_MODEL_DIR))


def has_export(workdir: str) -> bool:
  """True when the run in `workdir` has written its model.keras."""
  return os.path.exists(os.path.join(workdir, workdir_lib.KERAS_FILE))
