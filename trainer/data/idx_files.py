"""Reads and checks the four IDX files of an MNIST-format dataset (MNIST, Fashion-MNIST, ...)."""

import gzip
import os
from typing import Optional, Tuple

import numpy as np

from trainer import errors

# File stems and the IDX magic number each must carry: 0x0803 is 3-D unsigned bytes (images),
# 0x0801 is 1-D unsigned bytes (labels).
IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
# The two MNIST-format datasets share every header: their first training labels tell them apart.
FIRST_TRAIN_LABELS = {"mnist": (5, 0, 4, 1, 9, 2, 1, 3, 1, 4),
                      "fashion_mnist": (9, 0, 0, 3, 0, 2, 7, 2, 5, 5)}


def identify(train_labels: np.ndarray) -> Optional[str]:
  """mnist or fashion_mnist when the training labels are theirs, else None."""
  first = tuple(int(label) for label in train_labels[:10])
  return next((name for name, labels in FIRST_TRAIN_LABELS.items() if labels == first), None)


def _find(data_dir: str, stem: str) -> str:
  """Returns the path of `stem` in data_dir, gzipped or not."""
  for name in (stem + ".gz", stem):
    path = os.path.join(data_dir, name)
    if os.path.isfile(path):
      return path
  raise errors.UserError(
      f"{os.path.join(data_dir, stem + '.gz')} is missing. --data_dir must hold the four IDX files "
      f"{TRAIN_IMAGES}.gz, {TRAIN_LABELS}.gz, {TEST_IMAGES}.gz and {TEST_LABELS}.gz "
      "(Debian's dataset-fashion-mnist installs them under /usr/share/datasets/fashion-mnist), "
      "or one subfolder of images per class.")


def _read_bytes(path: str) -> bytes:
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      return f.read()
  except (OSError, EOFError) as e:  # BadGzipFile is an OSError; a cut-off gzip is an EOFError.
    raise errors.UserError(
        f"{path} cannot be read ({e}); it is corrupt or truncated. Fetch the file again.") from e


def read_idx(path: str, magic: int) -> np.ndarray:
  """Returns the uint8 array stored in one IDX file, after checking its header and length."""
  raw = _read_bytes(path)
  if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
    found = raw[:4].hex() if len(raw) >= 4 else "nothing"
    raise errors.UserError(
        f"{path} is not an IDX file of the expected kind: magic number {found}, expected "
        f"{magic:08x}. Check that the file is the one its name says.")
  num_dims = raw[3]
  header_size = 4 + 4 * num_dims
  if len(raw) < header_size:
    raise errors.UserError(f"{path} is truncated inside its header. Fetch the file again.")
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(num_dims))
  expected = header_size + int(np.prod(shape))
  if len(raw) != expected:
    raise errors.UserError(
        f"{path} holds {len(raw)} bytes but its header {shape} needs {expected}: the file is "
        "truncated or corrupt. Fetch the file again.")
  return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def _read_split(data_dir: str, images_stem: str, labels_stem: str) -> Tuple[np.ndarray, np.ndarray]:
  images_path = _find(data_dir, images_stem)
  labels_path = _find(data_dir, labels_stem)
  images = read_idx(images_path, IMAGE_MAGIC)
  labels = read_idx(labels_path, LABEL_MAGIC)
  if images.shape[1:] != IMAGE_SHAPE:
    raise errors.UserError(
        f"{images_path} holds images of shape {images.shape[1:]}, expected {IMAGE_SHAPE}: "
        "only MNIST-format datasets are supported.")
  if len(images) != len(labels):
    raise errors.UserError(
        f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels: "
        "the two files must come from the same dataset.")
  if labels.size and labels.max() >= NUM_CLASSES:
    raise errors.UserError(
        f"{labels_path} holds label {labels.max()}, expected labels 0 to {NUM_CLASSES - 1}.")
  return images[..., np.newaxis], labels.astype(np.int32)


def read_mnist_format(data_dir: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Returns (train_images, train_labels, test_images, test_labels) read from data_dir.

  Images are uint8 of shape [N, 28, 28, 1], labels int32 of shape [N].
  """
  if not os.path.isdir(data_dir):
    raise errors.UserError(f"--data_dir={data_dir} is not a folder.")
  train_images, train_labels = _read_split(data_dir, TRAIN_IMAGES, TRAIN_LABELS)
  test_images, test_labels = _read_split(data_dir, TEST_IMAGES, TEST_LABELS)
  return train_images, train_labels, test_images, test_labels
