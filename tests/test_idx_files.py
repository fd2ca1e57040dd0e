"""Reading MNIST-format IDX files, and the errors for missing, cut and corrupt ones."""

import gzip
import os
import shutil

import numpy as np
import pytest

from tests import datasets
from trainer.data import idx_files
from trainer import errors


@pytest.fixture
def idx_folder(tmp_path):
  """A small MNIST-format folder to damage one file of: 12 training and 10 test images of
  28x28, labels 0 to 9 (the real files' sizes only change the numbers in the messages)."""
  folder = tmp_path / "data"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for images_stem, labels_stem, count in (
      (idx_files.TRAIN_IMAGES, idx_files.TRAIN_LABELS, 12),
      (idx_files.TEST_IMAGES, idx_files.TEST_LABELS, 10)):
    datasets.write_idx(folder / f"{images_stem}.gz",
                       rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), idx_files.IMAGE_MAGIC)
    datasets.write_idx(folder / f"{labels_stem}.gz", np.arange(count, dtype=np.uint8) % 10,
                       idx_files.LABEL_MAGIC)
  return folder


def test_reads_the_real_files_with_mnist_shapes(fashion_mnist_dir):
  train_images, train_labels, test_images, test_labels = idx_files.read_mnist_format(
      fashion_mnist_dir)
  assert train_images.shape == (60_000, 28, 28, 1) and train_images.dtype == np.uint8
  assert test_images.shape == (10_000, 28, 28, 1)
  assert train_labels.shape == (60_000,) and test_labels.shape == (10_000,)
  assert sorted(np.unique(train_labels)) == list(range(10))
  assert np.bincount(test_labels).tolist() == [1000] * 10  # Fashion-MNIST's balanced test set.


def test_reads_uncompressed_files(idx_folder):
  name = idx_files.TEST_LABELS
  with gzip.open(idx_folder / f"{name}.gz") as f:
    (idx_folder / name).write_bytes(f.read())
  os.remove(idx_folder / f"{name}.gz")
  assert idx_files.read_mnist_format(str(idx_folder))[3].tolist() == list(range(10))


def test_missing_file_is_named(idx_folder):
  os.remove(idx_folder / f"{idx_files.TEST_IMAGES}.gz")
  with pytest.raises(errors.UserError, match=f"{idx_files.TEST_IMAGES}.gz is missing"):
    idx_files.read_mnist_format(str(idx_folder))


def test_truncated_gzip_is_named(idx_folder):
  path = idx_folder / f"{idx_files.TRAIN_IMAGES}.gz"
  path.write_bytes(path.read_bytes()[:5_000])
  with pytest.raises(errors.UserError, match=f"{path}.*corrupt or truncated"):
    idx_files.read_mnist_format(str(idx_folder))


def test_short_payload_is_named(idx_folder):
  path = idx_folder / f"{idx_files.TRAIN_LABELS}.gz"
  with gzip.open(path) as f:
    raw = f.read()
  with gzip.open(path, "wb") as f:
    f.write(raw[:-10])
  with pytest.raises(errors.UserError,
                     match=rf"{path} holds 10 bytes but its header \(12,\) needs 20"):
    idx_files.read_mnist_format(str(idx_folder))


def test_swapped_files_fail_on_the_magic_number(idx_folder):
  images = idx_folder / f"{idx_files.TEST_IMAGES}.gz"
  labels = idx_folder / f"{idx_files.TEST_LABELS}.gz"
  shutil.copy(labels, images)
  with pytest.raises(errors.UserError, match=f"{images} is not an IDX file.*expected 00000803"):
    idx_files.read_mnist_format(str(idx_folder))


def test_label_count_must_match_image_count(idx_folder):
  shutil.copy(idx_folder / f"{idx_files.TEST_LABELS}.gz",
              idx_folder / f"{idx_files.TRAIN_LABELS}.gz")
  with pytest.raises(errors.UserError, match="12 images but .* 10 labels"):
    idx_files.read_mnist_format(str(idx_folder))


def test_data_dir_must_exist(tmp_path):
  with pytest.raises(errors.UserError, match="is not a folder"):
    idx_files.read_mnist_format(str(tmp_path / "nowhere"))
