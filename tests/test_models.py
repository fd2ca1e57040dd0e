"""The three model APIs build the same network, for each built-in network."""

import keras
import numpy as np
import pytest

from trainer import config as config_lib
from trainer import errors
from trainer.models import simple

IMAGES = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)


def test_all_apis_have_the_blog_networks_parameter_count():
  for api in config_lib.APIS:
    assert simple.build_model(api).count_params() == 203_530, api


# Conv 3x3x1x32 + 32, conv 3x3x32x64 + 64, then the head on 7x7x64 features.
CNN_PARAMS = 320 + 18_496 + 3136 * 256 + 256 + 256 * 10 + 10


def test_the_cnn_has_two_conv_blocks_and_the_same_head_in_every_api():
  for api in config_lib.APIS:
    model = simple.build_model(api, network="cnn")
    assert model.count_params() == CNN_PARAMS, api
    names = [layer.name for layer in model.layers if layer.name != "images"]
    assert names == ["conv1", "pool1", "conv2", "pool2", "flatten", "hidden", "logits",
                     "softmax"], api


@pytest.mark.parametrize("network", tuple(simple.LAYERS))
def test_same_seed_gives_identical_weights_and_predictions(network):
  built = [simple.build_model(api, seed=7, network=network) for api in config_lib.APIS]
  reference = built[0]
  for model in built[1:]:
    for ours, theirs in zip(model.get_weights(), reference.get_weights()):
      np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(model(IMAGES), reference(IMAGES))


def test_different_seeds_give_different_weights():
  first = simple.build_model("functional", seed=1).get_weights()[0]
  second = simple.build_model("functional", seed=2).get_weights()[0]
  assert not np.array_equal(first, second)


def test_subclass_creates_its_layers_in_init():
  model = simple.SubclassClassifier(hidden_units=64)
  assert [model.hidden.units, model.logits.units] == [64, 10]


@pytest.mark.parametrize("api", config_lib.APIS)
def test_hidden_units_sets_the_width(api):
  assert simple.build_model(api, hidden_units=32).count_params() == 784 * 32 + 32 + 32 * 10 + 10


@pytest.mark.parametrize("network", tuple(simple.LAYERS))
@pytest.mark.parametrize("api", config_lib.APIS)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_computes_low_and_outputs_float32(api, policy, network):
  model = simple.build_model(api, precision=policy, network=network)
  assert keras.backend.standardize_dtype(model(IMAGES).dtype) == "float32"
  hidden = model.get_layer("hidden") if api != "subclass" else model.hidden
  assert hidden.compute_dtype == policy.split("_")[1]
  assert hidden.kernel.dtype == "float32"  # Weights stay float32; only the compute is low.


def test_a_model_that_is_neither_built_in_nor_a_function_is_refused():
  with pytest.raises(errors.UserError, match="neither a built-in model"):
    config_lib.Config.from_flags(model="resnet101")


def test_unknown_api_names_the_valid_ones():
  with pytest.raises(ValueError, match="sequential, functional, subclass"):
    simple.build_model("graph")


@pytest.mark.parametrize("network", tuple(simple.LAYERS))
@pytest.mark.parametrize("image_shape", [(28, 28, 1), (30, 22, 3)])
def test_the_count_computed_without_building_matches_the_built_model(network, image_shape):
  # simple.parameter_count names the size of a model too large to build; it must agree with
  # the layers themselves.
  built = simple.build_model("functional", hidden_units=16, image_shape=image_shape,
                             num_classes=7, network=network)
  assert simple.parameter_count(network, image_shape, 7, 16) == built.count_params()
