"""Reading MNIST-format IDX files, and the errors for missing, cut and corrupt ones."""

import gzip
import os
import shutil

import numpy as np
import pytest

from trainer.data import idx_files
from trainer import errors


@pytest.fixture
def idx_copy(fashion_mnist_dir, tmp_path):
  """A writable copy of the real Fashion-MNIST folder, for damaging one file."""
  folder = tmp_path / "data"
  shutil.copytree(fashion_mnist_dir, folder)
  return folder


def test_reads_the_real_files_with_mnist_shapes(fashion_mnist_dir):
  train_images, train_labels, test_images, test_labels = idx_files.read_mnist_format(
      fashion_mnist_dir)
  assert train_images.shape == (60_000, 28, 28, 1) and train_images.dtype == np.uint8
  assert test_images.shape == (10_000, 28, 28, 1)
  assert train_labels.shape == (60_000,) and test_labels.shape == (10_000,)
  assert sorted(np.unique(train_labels)) == list(range(10))
  assert np.bincount(test_labels).tolist() == [1000] * 10  # Fashion-MNIST's balanced test set.


def test_reads_uncompressed_files(idx_copy):
  name = idx_files.TEST_LABELS
  with gzip.open(idx_copy / f"{name}.gz") as f:
    (idx_copy / name).write_bytes(f.read())
  os.remove(idx_copy / f"{name}.gz")
  assert idx_files.read_mnist_format(str(idx_copy))[3].shape == (10_000,)


def test_missing_file_is_named(idx_copy):
  os.remove(idx_copy / f"{idx_files.TEST_IMAGES}.gz")
  with pytest.raises(errors.UserError, match=f"{idx_files.TEST_IMAGES}.gz is missing"):
    idx_files.read_mnist_format(str(idx_copy))


def test_truncated_gzip_is_named(idx_copy):
  path = idx_copy / f"{idx_files.TRAIN_IMAGES}.gz"
  path.write_bytes(path.read_bytes()[:100_000])
  with pytest.raises(errors.UserError, match=f"{path}.*corrupt or truncated"):
    idx_files.read_mnist_format(str(idx_copy))


def test_short_payload_is_named(idx_copy):
  path = idx_copy / f"{idx_files.TRAIN_LABELS}.gz"
  with gzip.open(path) as f:
    raw = f.read()
  with gzip.open(path, "wb") as f:
    f.write(raw[:-10])
  with pytest.raises(errors.UserError,
                     match=rf"{path} holds 59998 bytes but its header \(60000,\) needs 60008"):
    idx_files.read_mnist_format(str(idx_copy))


def test_swapped_files_fail_on_the_magic_number(idx_copy):
  images = idx_copy / f"{idx_files.TEST_IMAGES}.gz"
  labels = idx_copy / f"{idx_files.TEST_LABELS}.gz"
  shutil.copy(labels, images)
  with pytest.raises(errors.UserError, match=f"{images} is not an IDX file.*expected 00000803"):
    idx_files.read_mnist_format(str(idx_copy))


def test_label_count_must_match_image_count(idx_copy):
  shutil.copy(idx_copy / f"{idx_files.TEST_LABELS}.gz",
              idx_copy / f"{idx_files.TRAIN_LABELS}.gz")
  with pytest.raises(errors.UserError, match="60000 images but .* 10000 labels"):
    idx_files.read_mnist_format(str(idx_copy))


def test_data_dir_must_exist(tmp_path):
  with pytest.raises(errors.UserError, match="is not a folder"):
    idx_files.read_mnist_format(str(tmp_path / "nowhere"))
