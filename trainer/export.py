"""The finished model as files: model.keras (Keras) and saved_model/ (inference SavedModel)."""

import os
import shutil

import keras

from trainer import models  # pylint: disable=unused-import  # Registers SubclassClassifier.

KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"


def export_model(model: keras.Model, workdir: str) -> dict:
  """Writes both exports into `workdir`, each through a rename so none is ever half-written."""
  keras_path = os.path.join(workdir, KERAS_FILE)
  model.save(keras_path + ".tmp.keras")
  os.replace(keras_path + ".tmp.keras", keras_path)

  saved_model_path = os.path.join(workdir, SAVED_MODEL_DIR)
  staging = saved_model_path + ".tmp"
  shutil.rmtree(staging, ignore_errors=True)
  model.export(staging, format="tf_saved_model", verbose=False)
  shutil.rmtree(saved_model_path, ignore_errors=True)
  os.replace(staging, saved_model_path)
  return {"keras": keras_path, "saved_model": saved_model_path}


def load_keras_model(workdir: str) -> keras.Model:
  """Loads workdir/model.keras; the subclassed model is registered, so all three APIs load."""
  return keras.models.load_model(os.path.join(workdir, KERAS_FILE))
