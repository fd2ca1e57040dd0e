"""Keras Applications by name: built untrained for the data, trained, exported and reloaded."""

import pytest

from trainer import config as config_lib
from trainer import errors
from trainer.models import applications
from trainer.models import factory


def build(name, image_shape=(32, 32, 3), num_classes=10):
  config = config_lib.Config.from_flags(model=f"applications.{name}")
  return factory.model_builder(config.model, config.data.seed)(image_shape, num_classes, "float32")


def test_any_constructor_builds_for_the_datas_shape_and_classes():
  built = build("MobileNetV2", (40, 40, 1), 7)
  assert built.model.input_shape == (None, 40, 40, 1)
  assert built.model.output_shape == (None, 7)
  assert built.api == "functional" and not built.from_logits


def test_an_unknown_name_lists_the_close_matches():
  with pytest.raises(errors.UserError, match="Did you mean applications.MobileNetV2"):
    factory.model_builder(config_lib.Config.from_flags(model="applications.MobilenetV2").model, 0)


def test_an_unknown_name_fails_before_any_data_loads():
  with pytest.raises(errors.UserError, match="has no model 'ResNet51'"):
    factory.model_builder(config_lib.Config.from_flags(model="applications.ResNet51").model, 0)


def test_a_shape_the_application_refuses_names_its_minimum():
  with pytest.raises(errors.UserError, match="at least 32x32 pixels; the data's are 28x28"):
    build("MobileNetV2", (28, 28, 1))


def test_api_is_refused_for_an_application():
  with pytest.raises(errors.UserError, match="Leave --api out"):
    config_lib.Config.from_flags(model="applications.MobileNetV2", api="sequential")


def test_constructor_names_are_the_model_constructors():
  names = applications.constructor_names()
  assert {"ResNet50", "MobileNetV2", "EfficientNetB0", "ConvNeXtTiny"} <= set(names)
  assert "resnet" not in names  # Submodules are not models.


# MobileNet (v1): of the applications that take 32x32 images, the one of fewest layers that is
# not hundreds of megabytes of weights (VGG16's), since building and tracing a model cost by its
# layers. It is reloaded from model.keras: its SavedModel, a Functional model's as the built-in
# ones' (tests/test_resume.py), would add seconds of tracing.
@pytest.mark.slow
def test_an_application_trains_and_reloads_with_trainer_evaluate(tmp_path):
  from trainer import evaluate  # pylint: disable=g-import-not-at-top
  from trainer import train  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "mobilenet"
  config = config_lib.Config.from_flags(
      model="applications.MobileNet", dataset="synthetic", image_shape=(32, 32, 3),
      epochs=1, batch_size=16, max_steps_per_epoch=4, eval_steps=2, num_test_examples=64,
      strategy="default", log_every=2, progress="none", export_saved_model=False,
      workdir=str(workdir))
  results = train.train_and_evaluate(config)
  assert results["model"] == "applications.MobileNet" and results["api"] == "functional"
  # Reloaded from model.keras (Keras's own classes: no code of ours needed) and measured again.
  figures = evaluate.evaluate_export(str(workdir))
  assert figures["num_examples"] == results["test_examples"] == 64  # Not --eval_steps' 32.
  assert figures["test_accuracy"] == pytest.approx(results["test_accuracy"])
