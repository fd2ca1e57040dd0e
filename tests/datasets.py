"""Test data written as users keep it: image files and MNIST-format IDX files."""

import gzip
import os

import tensorflow as tf


def write_images(folder, images, names=None, extension="png") -> None:
  """Writes uint8 images [N, h, w, c] into `folder` as PNG (or JPEG) files."""
  os.makedirs(folder, exist_ok=True)
  encode = tf.io.encode_png if extension == "png" else tf.io.encode_jpeg
  for index, image in enumerate(images):
    name = names[index] if names is not None else f"{index:05d}"
    tf.io.write_file(os.path.join(folder, f"{name}.{extension}"), encode(image))


def write_idx(path, array, magic) -> None:
  """Writes `array` as a gzipped IDX file with the given magic number."""
  header = magic.to_bytes(4, "big") + b"".join(size.to_bytes(4, "big") for size in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.tobytes())
