"""Images cropped from their original: the training box, the evaluation's centre crop that keeps
the aspect ratio, what is held in memory, and the accuracy that keeping the aspect ratio buys."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests import datasets
from trainer import config as config_lib
from trainer.data import input_pipeline
from trainer.data import preprocessing
from trainer.data import tfrecords
from trainer import errors
from trainer import train


def _windows(height, width, count=200, size=(224, 224)):
  return np.array([preprocessing.random_crop_window(
      height, width, preprocessing.example_seed(0, 0, position), size, 0.875).numpy()
                   for position in range(count)])


def test_training_boxes_cover_8_to_100_percent_at_3_4_to_4_3_inside_the_image():
  windows = _windows(300, 500)
  top, left, height, width = windows.T
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + height <= 300).all() and (left + width <= 500).all()
  area = height * width / (300 * 500)
  assert area.min() >= 0.075 and area.max() <= 1.0 and area.min() < 0.2 and area.max() > 0.7
  ratio = width / height
  assert ratio.min() >= 0.74 and ratio.max() <= 1.35
  assert len({tuple(window) for window in windows}) > 190  # Each example draws its own.


def test_the_box_follows_seed_epoch_and_position_alone():
  def window(seed, epoch, position):
    return preprocessing.random_crop_window(
        300, 500, preprocessing.example_seed(seed, epoch, position), (224, 224), 0.875).numpy()
  np.testing.assert_array_equal(window(1, 2, 3), window(1, 2, 3))
  for other in ((2, 2, 3), (1, 3, 3), (1, 2, 4)):
    assert not np.array_equal(window(1, 2, 3), window(*other))


def test_a_box_that_cannot_be_drawn_falls_back_to_the_centre_crop():
  # A 4 x 200 strip holds no box of 8% of its area at aspect 3/4 to 4/3 (at most 4 x 5 pixels).
  windows = _windows(4, 200, count=5, size=(72, 72))
  expected = preprocessing.center_crop_window(4, 200, (72, 72), 0.875).numpy()
  assert (windows == expected).all() and expected.tolist() == [1, 99, 3, 3]


@pytest.mark.parametrize("height, width, size, crop, expected", [
    (300, 500, (224, 224), 0.875, [19, 119, 262, 262]),  # Wide: the centre of the shorter side.
    (500, 300, (224, 224), 0.875, [119, 19, 262, 262]),  # Tall.
    (300, 500, (224, 224), 1.0, [0, 100, 300, 300]),  # The whole shorter side.
    (300, 500, (224, 112), 1.0, [0, 175, 300, 150]),  # The target's own aspect ratio.
])
def test_the_evaluation_crop_keeps_the_aspect_ratio(height, width, size, crop, expected):
  assert preprocessing.center_crop_window(height, width, size, crop).numpy().tolist() == expected


# A colour JPEG's window differs from the whole image's decode in a few pixels at its edge,
# where the chroma is upsampled from fewer neighbours; a grey one and a PNG are exact.
@pytest.mark.parametrize("encode, channels, mean_difference", [
    (tf.io.encode_jpeg, 1, 0.0), (tf.io.encode_jpeg, 3, 1.0), (tf.io.encode_png, 3, 0.0)])
def test_only_the_window_is_decoded_and_it_equals_cropping_the_whole(encode, channels,
                                                                     mean_difference):
  image = np.random.default_rng(0).integers(0, 256, (60, 90, channels), dtype=np.uint8)
  image_bytes = encode(image)
  whole = tf.io.decode_image(image_bytes, channels=channels).numpy()
  window = preprocessing.decode_window(image_bytes, channels, lambda height, width: tf.stack(
      [height // 4, width // 3, 20, 30])).numpy()
  assert window.shape == (20, 30, channels)
  assert np.abs(window.astype(int) - whole[15:35, 30:60]).mean() <= mean_difference


def test_training_and_evaluation_images_have_the_size_trained_on_in_0_1():
  image_bytes = tf.io.encode_jpeg(
      np.random.default_rng(0).integers(0, 256, (90, 150, 3), dtype=np.uint8))
  for image in (preprocessing.training_image(image_bytes, preprocessing.example_seed(0, 0, 0),
                                             (72, 80, 3), "crop_flip"),
                preprocessing.evaluation_image(image_bytes, (72, 80, 3))):
    assert image.shape == (72, 80, 3) and image.dtype == tf.float32
    assert 0.0 <= image.numpy().min() and image.numpy().max() <= 1.0


@pytest.mark.slow
def test_images_of_other_sizes_are_held_encoded_and_batches_follow_the_step(tmp_path):
  datasets.write_shape_folder(tmp_path, "train", 16, 96, 96, seed=0, extension="jpg")
  datasets.write_shape_folder(tmp_path, "train", 8, 96, 96, seed=1)
  datasets.write_shape_folder(tmp_path, "test", 4, 96, 160, seed=2, extension="jpg")
  datasets.write_shape_folder(tmp_path, "test", 4, 160, 96, seed=3)
  settings = dict(data_dir=str(tmp_path), image_size=(72, 72), batch_size=4, seed=3,
                  augment="crop_flip", normalize=True)
  held = input_pipeline.make_input_pipeline(config_lib.Config.from_flags(**settings).data)
  streamed = input_pipeline.make_input_pipeline(config_lib.Config.from_flags(memory_limit_mb=0.001,
                                                                   **settings).data)
  assert held.encoded and held.train.images.dtype == object
  assert held.train.images[0][:2] == b"\xff\xd8"  # The file's own JPEG bytes, not pixels.
  assert streamed.encoded and streamed.stream is not None
  def batches(pipeline, start):
    return [(images.numpy(), labels.numpy())
            for images, labels in pipeline.training_batches(start, 2)]
  whole = batches(held, 0)
  assert whole[0][0].shape == (4, 72, 72, 1) and not np.array_equal(whole[0][0], whole[6][0])
  for start in (0, 8):
    resumed = whole if start == 0 else batches(held, start)
    # Held and streamed give the same batches, and from a step on those of the whole run.
    for (ours, theirs), expected in zip(zip(resumed, batches(streamed, start), strict=True),
                                        whole[start:], strict=True):
      for a, b, c in zip(ours, theirs, expected):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
  images, labels, weights = next(iter(held.eval_dataset()))
  assert images.shape == (4, 72, 72, 1) and weights.numpy().sum() == 4


@pytest.mark.parametrize("image_size, encoded", [((96, 96), False), ((48, 48), False),
                                                  ((72, 72), True)])
def test_pixels_are_held_only_where_nothing_is_lost(tmp_path, image_size, encoded):
  datasets.write_shape_folder(tmp_path, "train", 12, 96, 96, seed=0)
  datasets.write_shape_folder(tmp_path, "test", 6, 96, 96, seed=1)
  pipeline = input_pipeline.make_input_pipeline(config_lib.Config.from_flags(
      data_dir=str(tmp_path), image_size=image_size, batch_size=4).data)
  assert pipeline.encoded == encoded
  assert (pipeline.train.images.dtype == object) == encoded


def test_an_eval_crop_outside_0_1_is_refused():
  with pytest.raises(errors.UserError, match=r"--eval_crop=1.5 must lie in \(0, 1\]"):
    config_lib.Config.from_flags(eval_crop=1.5)


# Trained on square images of circles and ellipses, tested on tall and wide ones: squashed to a
# square, a circle in a wide image becomes a tall ellipse. The aspect-preserving centre crop
# classifies them all; the squashed evaluation of the code before it measured 0.40 to 0.50.
@pytest.mark.slow
def test_tall_and_wide_test_images_are_classified_as_the_square_ones(tmp_path):
  folder, shards = tmp_path / "images", tmp_path / "shards"
  datasets.write_shape_folder(folder, "train", 150, 80, 80, seed=0, extension="jpg")
  datasets.write_shape_folder(folder, "train", 50, 80, 80, seed=1)
  datasets.write_shape_folder(folder, "test", 30, 80, 160, seed=2, extension="jpg")
  datasets.write_shape_folder(folder, "test", 30, 160, 80, seed=3)
  tfrecords.convert(str(folder), str(shards), num_shards=2)
  settings = dict(image_size=(72, 72), batch_size=16)
  # Shards of the same files give the folder's evaluation images: what the folder's run below
  # classifies, a run from the shards classifies alike.
  from_folder, from_shards = (input_pipeline.make_input_pipeline(config_lib.Config.from_flags(
      data_dir=str(source), **settings).data) for source in (folder, shards))
  assert from_folder.encoded and from_shards.encoded
  evaluated = [list(pipeline.final_test_split().eval_dataset())
               for pipeline in (from_folder, from_shards)]
  assert len(evaluated[0]) == len(evaluated[1]) == 4  # 60 test images in batches of 16.
  for folder_batch, shard_batch in zip(*evaluated):
    for a, b in zip(folder_batch, shard_batch):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
  results = train.train_and_evaluate(config_lib.Config.from_flags(
      data_dir=str(folder), model="cnn", epochs=2, augment="flip", strategy="default",
      workdir=str(tmp_path / "run"), **settings))
  assert results["test_examples"] == 60 and results["test_accuracy"] >= 0.95
