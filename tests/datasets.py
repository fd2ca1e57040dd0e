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
  # Level 1: a test reads the file back at once, and gzip's default level 9 takes many times
  # longer for a few percent fewer bytes.
  with gzip.open(path, "wb", compresslevel=1) as f:
    f.write(header + array.tobytes())


SHAPE_CLASSES = ("circle", "wide_ellipse", "tall_ellipse")


def shape_images(count, height, width, seed=0):
  """Grey images of one filled shape each, centred in a `height` x `width` frame of noise, and
  their labels: a circle (0), an ellipse twice as wide as tall (1) or twice as tall as wide (2).

  The shapes' size follows the shorter side, so a tall or wide frame holds the same shapes as a
  square one: squashing such a frame to a square turns a circle into an ellipse.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  side = min(height, width)
  rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
  labels = rng.integers(0, len(SHAPE_CLASSES), count).astype(np.int32)
  images = np.empty((count, height, width, 1), np.uint8)
  for index, label in enumerate(labels):
    radius = side * rng.uniform(0.18, 0.3)
    semi_axes = [(radius, radius), (radius * 0.6, radius * 1.2), (radius * 1.2, radius * 0.6)]
    half_height, half_width = semi_axes[label]
    centre_row = height / 2 + rng.uniform(-0.05, 0.05) * side
    centre_column = width / 2 + rng.uniform(-0.05, 0.05) * side
    inside = (((rows - centre_row) / half_height) ** 2
              + ((columns - centre_column) / half_width) ** 2) <= 1.0
    noise = rng.integers(0, 60, (height, width))
    images[index, ..., 0] = np.where(inside, 200 + noise // 2, noise)
  return images, labels


def write_shape_folder(root, split, count, height, width, seed, extension="png"):
  """Writes shape_images as an image folder split: root/split/<class>/NNNNN.ext."""
  images, labels = shape_images(count, height, width, seed)
  for label, name in enumerate(SHAPE_CLASSES):
    chosen = labels == label
    write_images(os.path.join(root, split, name), images[chosen],
                 names=[f"{seed}-{index:05d}" for index in range(int(chosen.sum()))],
                 extension=extension)
