"""The tf.data pipeline: global batches, scaling, seeded epochs, full evaluation, offline errors."""

import gzip
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from trainer import config as config_lib
from trainer.data import idx_files
from trainer.data import input_pipeline
from trainer import errors


def make_pipeline(**settings) -> input_pipeline.InputPipeline:
  """The pipeline of a Config with `settings`."""
  config = config_lib.Config.from_flags(**settings)
  return input_pipeline.make_input_pipeline(config.data).bounded(
      config.loop.max_steps_per_epoch, config.loop.eval_steps)


@pytest.fixture(scope="module")
def subset_dir(fashion_subset) -> str:
  """4,000 training and 1,000 test images of Fashion-MNIST as IDX files: enough for every batch
  and epoch rule, without reading all 70,000 for each test."""
  return str(fashion_subset / "idx")


@pytest.fixture(scope="module")
def fashion_pipeline(subset_dir):
  return make_pipeline(dataset="fashion_mnist", data_dir=subset_dir, batch_size=100, seed=3)


def _labels(dataset):
  return np.concatenate([batch[1].numpy() for batch in dataset])


def test_train_batches_are_global_sized_and_scaled(fashion_pipeline):
  assert fashion_pipeline.steps_per_epoch == 40
  images, labels = next(iter(fashion_pipeline.train_dataset(epoch=0)))
  assert images.shape == (100, 28, 28, 1) and images.dtype == tf.float32
  assert labels.shape == (100,) and labels.dtype == tf.int32
  assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
  assert float(tf.reduce_max(images)) > 0.9  # Scaled, not squashed.


def test_an_epoch_is_a_seeded_permutation_of_the_training_split(fashion_pipeline):
  epoch0 = _labels(fashion_pipeline.train_dataset(epoch=0))
  np.testing.assert_array_equal(np.bincount(epoch0), np.bincount(fashion_pipeline.train.labels))
  np.testing.assert_array_equal(epoch0, _labels(fashion_pipeline.train_dataset(epoch=0)))
  assert not np.array_equal(epoch0, _labels(fashion_pipeline.train_dataset(epoch=1)))
  assert not np.array_equal(epoch0, fashion_pipeline.train.labels)  # Shuffled at all.


def test_start_step_enters_the_epoch_where_a_full_pass_would_be(fashion_pipeline):
  whole = _labels(fashion_pipeline.train_dataset(epoch=2))
  resumed = _labels(fashion_pipeline.train_dataset(epoch=2, start_step=25))
  np.testing.assert_array_equal(resumed, whole[25 * 100:])


def test_evaluation_sees_every_test_example_once(subset_dir):
  # 1,000 test examples in batches of 64: the last batch is padded with weight 0.
  pipeline = make_pipeline(dataset="fashion_mnist", data_dir=subset_dir, batch_size=64)
  batches = list(pipeline.eval_dataset())
  assert len(batches) == 16 and all(batch[0].shape[0] == 64 for batch in batches)
  weights = np.concatenate([batch[2].numpy() for batch in batches])
  labels = np.concatenate([batch[1].numpy() for batch in batches])
  assert weights.sum() == 1_000
  np.testing.assert_array_equal(labels[weights == 1], pipeline.test.labels)


def test_num_test_examples_bounds_the_last_evaluation_to_the_splits_first_examples(
    subset_dir):
  pipeline = make_pipeline(dataset="fashion_mnist", data_dir=subset_dir, batch_size=64,
                           num_test_examples=200, eval_steps=1)
  assert (pipeline.num_test_examples, pipeline.test_split_size) == (64, 1_000)  # --eval_steps.
  final = pipeline.final_test_split()
  batches = list(final.eval_dataset())
  weights = np.concatenate([batch[2].numpy() for batch in batches])
  labels = np.concatenate([batch[1].numpy() for batch in batches])
  assert len(batches) == 4 and weights.sum() == 200
  np.testing.assert_array_equal(labels[weights == 1], pipeline.test.labels[:200])
  # Larger than the split: the whole split, once.
  assert make_pipeline(dataset="fashion_mnist", data_dir=subset_dir, batch_size=64,
                       num_test_examples=2_000).final_test_split().num_test_examples == 1_000


def test_max_steps_per_epoch_cuts_the_epoch(subset_dir):
  pipeline = make_pipeline(dataset="fashion_mnist", data_dir=subset_dir, batch_size=32,
                           max_steps_per_epoch=5)
  assert len(list(pipeline.train_dataset(epoch=0))) == 5


def test_synthetic_data_has_mnist_shapes_and_all_classes():
  pipeline = make_pipeline(dataset="synthetic", batch_size=256)
  # Its test split is a few global batches: random images' accuracy means nothing.
  assert (pipeline.steps_per_epoch, pipeline.num_test_examples) == (234, 4 * 256)
  images, labels = next(iter(pipeline.train_dataset(epoch=0)))
  assert images.shape == (256, 28, 28, 1) and images.dtype == tf.float32
  assert set(labels.numpy()) == set(range(10))
  again, _ = next(iter(pipeline.train_dataset(epoch=0)))
  np.testing.assert_array_equal(images, again)


def test_batch_larger_than_the_split_is_refused():
  with pytest.raises(errors.UserError, match="larger than the 60000 training examples"):
    make_pipeline(dataset="synthetic", batch_size=70_000)


def test_offline_tfds_fails_fast_and_names_the_offline_options(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  # A download host that refuses at once, as an unreachable one does when offline.
  monkeypatch.setattr(tfds.image_classification.MNIST, "URL", "http://127.0.0.1:9/")
  start = time.monotonic()
  with pytest.raises(errors.UserError) as raised:
    make_pipeline(dataset="mnist", tfds_data_dir=str(tmp_path / "tfds"))
  assert time.monotonic() - start < 10
  for option in ("--data_dir", "--dataset=fashion_mnist", "--dataset=synthetic"):
    assert option in str(raised.value)


def test_synthetic_data_takes_any_image_shape_and_class_count():
  pipeline = make_pipeline(dataset="synthetic", batch_size=64, image_shape=(8, 6, 3),
                           num_classes=4)
  images, labels = next(iter(pipeline.train_dataset(epoch=0)))
  assert images.shape == (64, 8, 6, 3) and (pipeline.image_shape, pipeline.num_classes) == (
      (8, 6, 3), 4)
  assert set(labels.numpy()) == set(range(4))
  eval_images, eval_labels, _ = next(iter(pipeline.eval_dataset()))
  assert eval_images.shape == (64, 8, 6, 3) and eval_labels.numpy().max() < 4


def test_idx_files_say_which_dataset_they_are(fashion_mnist_dir, subset_dir, tmp_path, caplog):
  # Fashion-MNIST's own training labels (their first 4,000 here, beside the subset's images).
  for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
    os.symlink(os.path.join(subset_dir, stem + ".gz"), tmp_path / (stem + ".gz"))
  labels = idx_files.read_idx(os.path.join(fashion_mnist_dir, "train-labels-idx1-ubyte.gz"),
                              idx_files.LABEL_MAGIC)[:4000]
  with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
    f.write(idx_files.LABEL_MAGIC.to_bytes(4, "big") + len(labels).to_bytes(4, "big")
            + labels.tobytes())
  assert make_pipeline(data_dir=str(tmp_path), batch_size=100).name == "fashion_mnist"
  # Other labels (the subset's, ordered by class): recorded by folder name, with a warning that
  # says how to name it.
  with caplog.at_level("WARNING"):
    assert make_pipeline(data_dir=subset_dir, batch_size=100).name == "idx:idx"
  assert "Name it with --dataset" in caplog.text
