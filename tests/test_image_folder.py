"""Your own data: a folder of images per class, any tfds dataset, synthetic shapes, bad data."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests import datasets
from tests.datasets import write_images
from trainer import config as config_lib
from trainer.data import idx_files
from trainer.data import image_folder
from trainer.data import input_pipeline
from trainer import errors
from trainer import train


def random_images(count, shape=(6, 5, 1), seed=0):
  return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def pipeline(**settings) -> input_pipeline.InputPipeline:
  return input_pipeline.make_input_pipeline(config_lib.Config.from_flags(**settings).data)


@pytest.fixture(scope="module")
def fashion_idx_and_folder(fashion_subset, tmp_path_factory):
  """Every 4th training and 5th test image of fashion_subset (1,000 and 200, still class by
  class) as IDX files under idx/ and as an image folder under images/, in the same order."""
  root = tmp_path_factory.mktemp("fashion_idx_and_folder")
  train_images, train_labels, test_images, test_labels = idx_files.read_mnist_format(
      str(fashion_subset / "idx"))
  os.makedirs(root / "idx")
  for images, labels, stem, split in ((train_images[::4], train_labels[::4], "train", "train"),
                                      (test_images[::5], test_labels[::5], "t10k", "test")):
    datasets.write_idx(root / "idx" / f"{stem}-images-idx3-ubyte.gz", images[..., 0],
                       idx_files.IMAGE_MAGIC)
    datasets.write_idx(root / "idx" / f"{stem}-labels-idx1-ubyte.gz", labels.astype(np.uint8),
                       idx_files.LABEL_MAGIC)
    for label in range(10):
      write_images(root / "images" / split / str(label), images[labels == label])
  return root


@pytest.mark.slow
def test_an_image_folder_gives_its_idx_files_batches_in_memory_and_streamed_and_trains(
    fashion_idx_and_folder, tmp_path):
  root = fashion_idx_and_folder
  settings = dict(batch_size=100, epochs=2)
  from_idx = pipeline(dataset="fashion_mnist", data_dir=str(root / "idx"), **settings)
  # 1,200 images of 784 bytes are 0.9 MB: a 0.5 MB limit streams them from disk.
  in_memory, streamed = (pipeline(data_dir=str(root / "images"), memory_limit_mb=limit,
                                  **settings) for limit in (0, 0.5))
  assert in_memory.stream is None and streamed.stream is not None
  # What a run reads of its pipeline is the IDX files': so it trains to the same weights.
  def read(made):
    return ((made.image_shape, made.num_classes, made.steps_per_epoch, made.num_test_examples,
             made.normalization),
            [[tensor.numpy() for tensor in batch] for batch in made.training_batches(0, 2)],
            [[tensor.numpy() for tensor in batch] for batch in made.eval_dataset()])
  expected_facts, expected_batches, expected_evaluation = read(from_idx)
  assert expected_facts[:4] == ((28, 28, 1), 10, 10, 200) and len(expected_batches) == 20
  for folder in (in_memory, streamed):
    facts, batches, evaluation = read(folder)
    assert facts == expected_facts
    for got, expected in zip(batches + evaluation, expected_batches + expected_evaluation,
                             strict=True):
      for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
  results = train.train_and_evaluate(config_lib.Config.from_flags(
      data_dir=str(root / "images"), memory_limit_mb=0.5, strategy="default", log_every=10,
      workdir=str(tmp_path / "streamed"), **settings))
  assert results["test_accuracy"] > 0.6 and results["steps"] == 20
  assert (results["dataset"], results["image_shape"], results["num_classes"]) == (
      "folder:images", [28, 28, 1], 10)


def test_streamed_and_in_memory_folders_give_the_same_batches_from_any_step(tmp_path):
  for label in "abc":
    write_images(tmp_path / label, random_images(20, seed=ord(label)))
  settings = dict(data_dir=str(tmp_path), batch_size=8, seed=5)
  held, streamed = pipeline(**settings), pipeline(memory_limit_mb=0.001, **settings)
  assert held.stream is None and streamed.stream is not None and streamed.train is None
  for start in (0, 7):
    for (a_images, a_labels), (b_images, b_labels) in zip(
        held.training_batches(start, 3), streamed.training_batches(start, 3)):
      np.testing.assert_array_equal(a_images, b_images)
      np.testing.assert_array_equal(a_labels, b_labels)
  for first, second in zip(held.eval_dataset(), streamed.eval_dataset()):
    np.testing.assert_array_equal(first[2], second[2])
    counted = first[2].numpy() > 0  # Padding (weight 0) may differ; it counts for nothing.
    for a, b in zip(first[:2], second[:2]):
      np.testing.assert_array_equal(a.numpy()[counted], b.numpy()[counted])


def test_a_flat_folder_holds_out_the_same_share_of_each_class_whatever_the_seed(tmp_path):
  for label, count in (("cats", 10), ("dogs", 15)):
    write_images(tmp_path / label, random_images(count))
  first, second = pipeline(data_dir=str(tmp_path), batch_size=4, seed=0), pipeline(
      data_dir=str(tmp_path), batch_size=4, seed=1)
  assert np.bincount(first.test.labels).tolist() == [2, 3]  # 0.2 of each class.
  np.testing.assert_array_equal(first.test.images, second.test.images)
  assert (first.num_classes, first.image_shape, first.name) == (2, (6, 5, 1), "folder:" +
                                                                tmp_path.name)
  assert pipeline(data_dir=str(tmp_path), batch_size=4, validation_split=0.5).num_test_examples \
      == 5 + 8


def test_image_size_resizes_mixed_sizes_and_jpeg_colour_is_read(tmp_path):
  write_images(tmp_path / "a", random_images(5, (20, 30, 3)), extension="jpg")
  write_images(tmp_path / "b", random_images(5, (10, 12, 3)))
  with pytest.raises(errors.UserError, match=r"differ in size: .* is 20x30, .* is 10x12 .*"
                                             r"--image_size=HEIGHT,WIDTH"):
    pipeline(data_dir=str(tmp_path), batch_size=2)
  resized = pipeline(data_dir=str(tmp_path), batch_size=2, image_size=(16, 16))
  assert resized.image_shape == (16, 16, 3) and resized.train.images.shape[1:] == (16, 16, 3)


@pytest.mark.parametrize("make, message", [
    (lambda root: os.makedirs(root / "empty"), "or one subfolder of images per class"),
    (lambda root: os.makedirs(root / "train" / "empty"), "holds no images"),
    (lambda root: write_images(root / "only", random_images(5)), "holds one class only"),
    (lambda root: (write_images(root / "a", random_images(5)),
                   write_images(root / "b", random_images(5)),
                   (root / "b" / "broken.png").write_bytes(b"not an image")),
     r"broken.png is not a readable PNG or JPEG image"),
    (lambda root: (write_images(root / "train" / "a", random_images(5)),
                   write_images(root / "train" / "b", random_images(5))),
     "has a train/ folder but no test/ folder"),
])
def test_bad_folders_are_named_with_what_to_do(tmp_path, make, message):
  make(tmp_path)
  with pytest.raises(errors.UserError, match=message):
    pipeline(data_dir=str(tmp_path), batch_size=2)


def test_an_image_whose_body_is_damaged_is_named(tmp_path):
  write_images(tmp_path / "a", random_images(4))
  write_images(tmp_path / "b", random_images(4))
  path = tmp_path / "b" / "00001.png"
  path.write_bytes(path.read_bytes()[:40])  # The header survives, the pixels do not.
  with pytest.raises(errors.UserError, match="00001.png cannot be decoded") as refused:
    pipeline(data_dir=str(tmp_path), batch_size=2)
  assert "function_node" not in str(refused.value) and "[Op:" not in str(refused.value)


def test_flags_that_do_not_fit_the_data_are_refused(tmp_path):
  write_images(tmp_path / "a", random_images(5))
  write_images(tmp_path / "b", random_images(5))
  with pytest.raises(errors.UserError, match="Leave --dataset out"):
    pipeline(data_dir=str(tmp_path), dataset="cifar10")
  with pytest.raises(errors.UserError, match="describe --dataset=synthetic"):
    config_lib.Config.from_flags(num_classes=3)
  # --num_test_examples bounds the last evaluation on any data.
  assert config_lib.Config.from_flags(num_test_examples=100).data.num_test_examples == 100


# Above 64 px the images are held as tfds stored them (PNG bytes) and cropped per example.
@pytest.mark.parametrize("memory_limit_mb, image_size", [(0, ()), (0.01, (16, 16)),
                                                         (0, (72, 72)), (0.01, (72, 72))])
@pytest.mark.slow
def test_any_tfds_image_dataset_trains_in_memory_or_streamed(tiny_tfds, tmp_path,
                                                             memory_limit_mb, image_size):
  # 350 images of 12x10x3 bytes are 126 KB: a 0.01 MB limit streams them through tfds. The mlp
  # without XLA: the quickest model to build, trace and export, and the data's path is the same.
  config = config_lib.Config.from_flags(
      dataset="tiny_shapes", tfds_data_dir=tiny_tfds, jit_compile=False, image_size=image_size,
      epochs=1, batch_size=30, strategy="default", workdir=str(tmp_path / "run"),
      memory_limit_mb=memory_limit_mb)
  pipeline = input_pipeline.make_input_pipeline(config.data)
  assert (pipeline.stream is None) == (memory_limit_mb == 0)
  assert pipeline.encoded == (image_size == (72, 72))
  results = train.train_and_evaluate(config)
  assert (results["dataset"], results["num_classes"], results["steps"]) == ("tiny_shapes", 3, 10)
  assert results["image_shape"] == [*(image_size or (12, 10)), 3]


def test_a_name_tfds_does_not_know_is_refused_with_where_to_look(tmp_path):
  with pytest.raises(errors.UserError, match="not a tensorflow-datasets dataset"):
    pipeline(dataset="no_such_dataset", tfds_data_dir=str(tmp_path))


def test_a_jpeg_whose_frame_follows_long_metadata_is_read(tmp_path):
  # EXIF-style metadata of 20 KB before the frame: past the first read of the header.
  jpeg = tf.io.encode_jpeg(np.zeros((12, 9, 3), np.uint8)).numpy()
  metadata = b"\xff\xe1" + (20_002).to_bytes(2, "big") + b"\0" * 20_000
  (tmp_path / "photo.jpg").write_bytes(jpeg[:2] + metadata + jpeg[2:])
  assert image_folder.image_header(str(tmp_path / "photo.jpg")) == ((12, 9), 3)
