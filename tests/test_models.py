"""The three model APIs build the same network."""

import keras
import numpy as np
import pytest

from trainer import config as config_lib
from trainer import models

IMAGES = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)


def test_all_apis_have_the_blog_networks_parameter_count():
  for api in config_lib.APIS:
    assert models.build_model(api).count_params() == 203_530, api


def test_same_seed_gives_identical_weights_and_predictions():
  built = [models.build_model(api, seed=7) for api in config_lib.APIS]
  reference = built[0]
  for model in built[1:]:
    for ours, theirs in zip(model.get_weights(), reference.get_weights()):
      np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(model(IMAGES), reference(IMAGES))


def test_different_seeds_give_different_weights():
  first = models.build_model("functional", seed=1).get_weights()[0]
  second = models.build_model("functional", seed=2).get_weights()[0]
  assert not np.array_equal(first, second)


def test_subclass_creates_its_layers_in_init():
  model = models.SubclassClassifier(hidden_units=64)
  assert [model.hidden.units, model.logits.units] == [64, 10]


@pytest.mark.parametrize("api", config_lib.APIS)
def test_hidden_units_sets_the_width(api):
  assert models.build_model(api, hidden_units=32).count_params() == 784 * 32 + 32 + 32 * 10 + 10


@pytest.mark.parametrize("api", config_lib.APIS)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_computes_low_and_outputs_float32(api, policy):
  model = models.build_model(api, precision=policy)
  assert keras.backend.standardize_dtype(model(IMAGES).dtype) == "float32"
  hidden = model.get_layer("hidden") if api != "subclass" else model.hidden
  assert hidden.compute_dtype == policy.split("_")[1]
  assert hidden.kernel.dtype == "float32"  # Weights stay float32; only the compute is low.


def test_unknown_api_names_the_valid_ones():
  with pytest.raises(ValueError, match="sequential, functional, subclass"):
    models.build_model("graph")
