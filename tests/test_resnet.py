"""The ResNets in the three APIs: structure, parameter counts, identical weights, BatchNorm under
several replicas, and one training step of ResNet-50 on tiny inputs."""

import os
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import processes
from trainer import config as config_lib
from trainer.distribute import distribution
from trainer.models import factory
from trainer.models import resnet


# resnet18 with one block in each of its first two stages: every kind of wiring (the stem, an
# identity block, a projection block with its stride, the head) for tests that train or step it,
# where the later stages, the second's wiring again at other widths, only lengthened the compiles
# (test_jax_backend.py's resnet18 runs too).
WIRING_ONLY = ("basic", (1, 1))


def trainable_count(model: keras.Model) -> int:
  # torchvision's and Model Garden's counts are trainable parameters: BatchNorm's moving
  # statistics are buffers there.
  return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


def build_all(network, image_shape, num_classes, seed=0):
  return {api: factory.build_model(network, api, image_shape, num_classes, seed)
          for api in config_lib.APIS}


@pytest.mark.parametrize("network, image_shape, num_classes, expected", [
    ("resnet18", (32, 32, 3), 10, 11_173_962),  # The CIFAR stem.
    ("resnet18", (224, 224, 3), 1000, 11_689_512),  # torchvision's resnet18.
    ("resnet50", (224, 224, 3), 1000, 25_557_032),  # torchvision's and Model Garden's v1.5.
])
def test_parameter_counts_match_the_reference_implementations(network, image_shape, num_classes,
                                                              expected):
  model = factory.build_model(network, "functional", image_shape, num_classes)
  assert trainable_count(model) == expected


@pytest.mark.parametrize("network, image_shape", [("resnet18", (32, 32, 3)),
                                                  ("resnet50", (72, 72, 3))])
@pytest.mark.slow
def test_three_apis_have_the_same_weights_in_the_same_order_and_outputs(network, image_shape):
  models = build_all(network, image_shape, 10, seed=5)
  reference = models["functional"]
  for api, model in models.items():
    assert trainable_count(model) == trainable_count(reference), api
    assert model.count_params() == reference.count_params(), api
    # The same layer and weight names, in the same order, with the same values.
    assert ([weight.path.split("/")[-2:] for weight in model.weights]
            == [weight.path.split("/")[-2:] for weight in reference.weights]), api
    for ours, theirs in zip(model.get_weights(), reference.get_weights()):
      np.testing.assert_array_equal(ours, theirs)
  # A training-mode call (which also updates BatchNorm's moving statistics) gives the same.
  images = np.random.default_rng(0).random((2, *image_shape), dtype=np.float32)
  expected = reference(images, training=True)
  for api, model in models.items():
    if model is not reference:
      np.testing.assert_array_equal(model(images, training=True), expected, err_msg=api)


def test_sequential_stacks_one_residual_block_layer_per_block():
  model = factory.build_model("resnet18", "sequential", (32, 32, 3), 10)
  blocks = [layer for layer in model.layers if isinstance(layer, resnet.ResidualBlock)]
  assert [block.name for block in blocks] == [
      f"stage{stage}_block{block}" for stage in range(1, 5) for block in (1, 2)]


def test_v1_5_bottleneck_strides_in_its_3x3_and_no_convolution_has_a_bias():
  model = factory.build_model("resnet50", "functional", (96, 96, 3), 10)
  assert model.get_layer("stage2_block1_conv1").strides == (1, 1)
  assert model.get_layer("stage2_block1_conv2").strides == (2, 2)
  assert model.get_layer("stage2_block1_conv2").kernel_size == (3, 3)
  assert model.get_layer("stage2_block1_shortcut_conv").strides == (2, 2)
  convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
  assert len(convolutions) == 53 and not any(layer.use_bias for layer in convolutions)


def test_each_blocks_last_batchnorm_starts_at_zero_so_blocks_start_as_identity():
  model = factory.build_model("resnet18", "functional", (32, 32, 3), 10)
  assert not model.get_layer("stage1_block1_bn2").gamma.numpy().any()
  assert model.get_layer("stage1_block1_bn1").gamma.numpy().all()


@pytest.mark.parametrize("size, kernel, pooled", [(64, (3, 3), False), (65, (7, 7), True)])
def test_the_stem_follows_the_image_size(size, kernel, pooled):
  model = factory.build_model("resnet18", "functional", (size, size, 3), 10)
  assert model.get_layer("stem_conv").kernel_size == kernel
  assert ("stem_pool" in [layer.name for layer in model.layers]) == pooled


def test_resnet50_takes_one_training_step_on_tiny_inputs():
  model = factory.build_model("resnet50", "subclass", (32, 32, 3), 10)
  optimizer = keras.optimizers.SGD(0.1)
  images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
  labels = np.array([0, 1, 2, 3])
  with tf.GradientTape() as tape:
    loss = keras.losses.sparse_categorical_crossentropy(labels, model(images, training=True))
  gradients = tape.gradient(loss, model.trainable_weights)
  optimizer.apply_gradients(zip(gradients, model.trainable_weights))
  assert np.isfinite(float(tf.reduce_mean(loss)))
  assert all(np.isfinite(gradient.numpy()).all() for gradient in gradients)
  # Every block's zero-initialised gamma got a gradient and left zero: the blocks now learn.
  last_gammas = [weight for weight in model.trainable_weights
                 if weight.path.endswith("_bn3/gamma")]
  assert len(last_gammas) == 16 and all(gamma.numpy().any() for gamma in last_gammas)


def _stem_statistics(strategy, sync_batchnorm, images):
  # As the task runs a step: the forward pass, then the replicas' copies averaged. Only the
  # stem's statistics are read.
  with mock.patch.dict(resnet.RESNET_SPECS, {"resnet18": WIRING_ONLY}), \
      strategy.scope():
    model = factory.build_model("resnet18", "functional", images.shape[1:], 10,
                                sync_batchnorm=sync_batchnorm)
  averaged = distribution.replica_averaged(model.non_trainable_variables)

  @tf.function
  def forward(batch):
    model(batch, training=True)
    distribution.average_replica_copies(averaged)

  if strategy.num_replicas_in_sync == 1:
    forward(images)
  else:
    for batch in strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(images)):
      strategy.run(forward, args=(batch,))
  variance = model.get_layer("stem_bn").moving_variance.value
  copies = [copy.numpy() for copy in getattr(variance, "values", [variance])]
  return model.get_layer("stem_bn").moving_mean.numpy(), copies


@pytest.fixture(scope="module")
def two_halves():
  # Two replicas' halves of one batch with different statistics.
  images = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype(np.float32)
  images[4:] = 3.0 * images[4:] + 2.0
  return images


@pytest.fixture(scope="module")
def one_device_statistics(two_halves):
  """The stem's moving (mean, [variance]) after one step on the whole batch on one device."""
  return _stem_statistics(tf.distribute.get_strategy(), False, two_halves)


@pytest.mark.slow
def test_batchnorm_under_mirrored_uses_each_replicas_statistics_by_default(
    two_halves, one_device_statistics):
  mean, (variance,) = one_device_statistics
  mirrored_mean, copies = _stem_statistics(distribution.make_strategy("mirrored"), False,
                                           two_halves)
  assert len(copies) == 2
  # Each replica normalised by its own half; the moving statistics are averaged over replicas,
  # so both copies agree (and the mean of two equal halves' means is the global mean).
  np.testing.assert_array_equal(copies[0], copies[1])
  np.testing.assert_allclose(mirrored_mean, mean, atol=1e-6)
  assert np.abs(copies[0] - variance).max() > 1e-2


@pytest.mark.slow
def test_sync_batchnorm_under_mirrored_uses_the_global_batch(two_halves, one_device_statistics):
  _, (variance,) = one_device_statistics
  _, copies = _stem_statistics(distribution.make_strategy("mirrored"), True, two_halves)
  for copy in copies:
    np.testing.assert_allclose(copy, variance, atol=1e-6)


def test_sync_batchnorm_is_refused_for_models_without_our_batchnorm():
  with pytest.raises(Exception, match="--sync_batchnorm applies to the built-in ResNets"):
    config_lib.Config.from_flags(model="cnn", sync_batchnorm=True)


@pytest.mark.slow
def test_three_apis_train_to_identical_weights_under_deterministic(tmp_path, monkeypatch,
                                                                   restores_op_determinism):
  # 6 steps with --deterministic on CIFAR-stem images, the three APIs in this process: one
  # digest of every weight. WIRING_ONLY, built by the same code: the APIs' wiring is compared
  # here (the full depth's structure and weights are, above).
  from trainer import train  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(resnet.RESNET_SPECS, "resnet18", WIRING_ONLY)
  results = {api: train.train_and_evaluate(config_lib.Config.from_flags(
      model="resnet18", api=api, dataset="synthetic", image_shape=(16, 16, 3), epochs=1,
      batch_size=8, max_steps_per_epoch=6, eval_steps=1, num_test_examples=8,
      strategy="default", deterministic=True, log_every=3, progress="none",
      # One SavedModel of a ResNet, the subclass's (the others' would repeat its tracing).
      export_saved_model=api == "subclass", workdir=str(tmp_path / api)))
             for api in config_lib.APIS}
  model = factory.build_model("resnet18", "functional", (16, 16, 3), 10)
  assert model.count_params() > trainable_count(model)
  assert {r["params"] for r in results.values()} == {model.count_params()}  # With BN statistics.
  assert len({r["weights_sha256"] for r in results.values()}) == 1, results


@pytest.mark.parametrize("precision, tolerance", [("float32", 1e-4), ("mixed_bfloat16", 2e-2)])
def test_fused_batchnorm_computes_what_keras_batchnorm_does(precision, tolerance):
  # The ResNets' BatchNorm runs TensorFlow's fused kernel (half of resnet18's bfloat16 step
  # went to Keras 3's separate ops): same outputs, gradients and moving statistics as Keras's.
  images = tf.constant(np.random.RandomState(0).randn(8, 6, 6, 5).astype("float32") * 3 + 1)
  ours = resnet.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype=precision)
  keras_own = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype=precision)
  figures = []
  for layer in (ours, keras_own):
    layer.build(images.shape)
    layer.gamma.assign(np.linspace(0.5, 2.0, 5))
    with tf.GradientTape() as tape:
      tape.watch(images)
      outputs = tf.cast(layer(images, training=True), tf.float32)
      loss = tf.reduce_sum(outputs * tf.range(5, dtype=tf.float32))
    gradients = tape.gradient(loss, [images, layer.gamma.value, layer.beta.value])
    inference = tf.cast(layer(images, training=False), tf.float32)
    figures.append([outputs, *gradients, layer.moving_mean, layer.moving_variance, inference])
  for name, mine, theirs in zip(["outputs", "input gradient", "gamma gradient", "beta gradient",
                                 "moving mean", "moving variance", "inference"], *figures):
    np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), rtol=tolerance,
                               atol=tolerance, err_msg=name)
  graph = tf.function(lambda x: ours(x, training=True)).get_concrete_function(images).graph
  assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}


@pytest.mark.slow
def test_jit_compile_over_two_replicas_averages_the_batchnorm_statistics(tmp_path):
  # Several replicas compile forward and backward under XLA, where a cross-replica update of
  # BatchNorm's statistics cannot run (--jit_compile with the ResNets crashed there); each
  # replica updates its own copy and the step averages them. The mean of the two halves' means
  # is the whole batch's: after one step the moving mean is one replica's over the whole batch
  # (replica 0's own half alone would differ). A convnet with the ResNets' BatchNormalization
  # stands in for a ResNet, whose XLA compile alone takes minutes on a CPU.
  from trainer import train  # pylint: disable=g-import-not-at-top
  moving_means = {}
  for strategy, jit_compile in (("default", False), ("mirrored", True)):
    config = config_lib.Config.from_flags(
        model=os.path.join(processes.ROOT, "tests", "batchnorm_model.py") + ":build",
        dataset="synthetic", image_shape=(16, 16, 3), batch_size=8, epochs=1,
        max_steps_per_epoch=1, num_test_examples=8, strategy=strategy, cpu_devices=2,
        precision="float32", jit_compile=jit_compile, progress="none",
        export_saved_model=False, workdir=str(tmp_path / strategy))
    results = train.train_and_evaluate(config)
    assert results["jit_compile"] == jit_compile
    model = keras.saving.load_model(tmp_path / strategy / "model.keras")
    moving_means[strategy] = model.get_layer("bn").moving_mean.numpy()
  assert np.abs(moving_means["mirrored"]).max() > 1e-3  # Updated inside the compiled step.
  # The same arithmetic up to rounding; one half's statistics differ by ~1e-4 here.
  np.testing.assert_allclose(moving_means["mirrored"], moving_means["default"], rtol=1e-5,
                             atol=1e-6)
