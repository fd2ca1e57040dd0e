"""Augmentation: what each kind does to a batch, and that its randomness follows the step."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from trainer import config as config_lib
from trainer.data import augment
from trainer.data import input_pipeline
from trainer.data import preprocessing
from trainer.data import sources
from trainer import errors


@functools.lru_cache(maxsize=None)
def images() -> tf.Tensor:
  """16 random images, made on first use: a tensor made at import would start TensorFlow's
  devices while pytest collects, before a GPU machine's session can set memory growth."""
  return tf.constant(np.random.default_rng(0).random((16, 12, 10, 3), dtype=np.float32))


def seed(step, epoch=0, run_seed=0):
  return augment.batch_seed(run_seed, epoch, step)


@pytest.mark.parametrize("kind", ["flip", "crop_flip"])
def test_the_same_seed_epoch_and_step_give_the_same_batch_and_others_differ(kind):
  first = augment.augment_batch(images(), seed(3), kind)
  np.testing.assert_array_equal(first, augment.augment_batch(images(), seed(3), kind))
  for other in (seed(4), seed(3, epoch=1), seed(3, run_seed=1)):
    assert not np.array_equal(first, augment.augment_batch(images(), other, kind))


def test_flip_mirrors_about_half_the_images_and_keeps_the_rest():
  flipped = augment.random_flip(images(), seed(0)).numpy()
  mirrored = [np.array_equal(out, image[:, ::-1]) for out, image in zip(flipped, images().numpy())]
  kept = [np.array_equal(out, image) for out, image in zip(flipped, images().numpy())]
  assert all(m or k for m, k in zip(mirrored, kept))
  assert 3 <= sum(mirrored) <= 13


def test_pad_and_crop_is_a_shift_of_whole_pixels_within_the_padding():
  cropped = augment.pad_and_crop(images(), seed(0)).numpy()
  padded = np.pad(images().numpy(), [(0, 0), (4, 4), (4, 4), (0, 0)])
  offsets = set()
  for out, source in zip(cropped, padded):
    found = [(dy, dx) for dy in range(9) for dx in range(9)
             if np.array_equal(out, source[dy:dy + 12, dx:dx + 10])]
    assert found, "not a window of the padded image"
    offsets.add(found[0])
  assert len(offsets) > 4  # Offsets vary from image to image.


def test_large_images_get_a_random_resized_crop_of_their_own_size():
  large = tf.constant(np.random.default_rng(1).random((4, 80, 96, 3), dtype=np.float32))
  out = augment.augment_batch(large, seed(0), "crop_flip").numpy()
  assert out.shape == large.shape
  assert 0.0 <= out.min() and out.max() <= 1.0
  assert not any(np.array_equal(a, b) or np.array_equal(a, b[:, ::-1])
                 for a, b in zip(out, large.numpy()))


def _pipeline(**settings):
  images = np.random.default_rng(2).integers(0, 256, (256, 8, 8, 3), dtype=np.uint8)
  labels = np.arange(256, dtype=np.int32) % 4
  return input_pipeline.InputPipeline(
      global_batch_size=32, seed=0, steps_per_epoch=8, eval_steps=1, num_test_examples=32,
      image_shape=(8, 8, 3), num_classes=4, name="test",
      source=sources.Held(sources.Split(images, labels), sources.Split(images, labels), 0),
      **settings)


def test_augmented_batches_from_any_step_are_those_of_the_whole_run():
  pipeline = _pipeline(augment="crop_flip",
                       normalization=preprocessing.channel_statistics(
                           np.random.default_rng(2).integers(0, 256, (256, 8, 8, 3),
                                                             dtype=np.uint8)))
  whole = [images.numpy() for images, _ in pipeline.training_batches(0, 2)]
  for start in (3, 8, 11):
    resumed = [images.numpy() for images, _ in pipeline.training_batches(start, 2)]
    assert len(resumed) == len(whole) - start
    for ours, theirs in zip(resumed, whole[start:]):
      np.testing.assert_array_equal(ours, theirs)
  assert not np.array_equal(whole[0], whole[8])  # Epoch 2 draws new crops and flips.


def test_normalization_standardises_train_and_test_images_alike():
  images = np.random.default_rng(2).integers(0, 256, (256, 8, 8, 3), dtype=np.uint8)
  mean, std = preprocessing.channel_statistics(images)
  np.testing.assert_allclose(mean, images.reshape(-1, 3).mean(0) / 255, rtol=1e-6)
  pipeline = _pipeline(normalization=(mean, std))
  train = np.concatenate([batch.numpy() for batch, _ in pipeline.training_batches(0, 1)])
  test = next(iter(pipeline.eval_dataset()))[0].numpy()
  np.testing.assert_allclose(train.reshape(-1, 3).mean(0), 0.0, atol=0.05)
  np.testing.assert_allclose(train.reshape(-1, 3).std(0), 1.0, atol=0.05)
  np.testing.assert_allclose(test[0], (images[0] / 255 - mean) / std, rtol=1e-5, atol=1e-6)
