"""Transforms of single images, below every source and the pipeline: encoded images (JPEG,
PNG) decoded into uint8 tensors of one shape, resizing, and per-channel statistics.

data/ flows one way: this module and the format readers (idx_files, image_folder) at the
bottom, tfrecords and sources above them, input_pipeline on top. Nothing here imports another
module of data/.
"""

from typing import Sequence

import numpy as np
import tensorflow as tf


def resize_uint8(image: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
  """`image` resized to `size` (height, width), antialiased, back in uint8."""
  image = tf.image.resize(image, size, antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def decode(image_bytes: tf.Tensor, image_shape: Sequence[int], resize: bool) -> tf.Tensor:
  """A uint8 image of `image_shape` from JPEG or PNG bytes, resized when `resize` is set."""
  image = tf.io.decode_image(image_bytes, channels=image_shape[2], expand_animations=False)
  if resize:
    image = resize_uint8(image, image_shape[:2])
  return tf.ensure_shape(image, image_shape)


def channel_statistics(images: np.ndarray):
  """(mean, std) per channel of uint8 `images` [N, height, width, channels], on the [0, 1]
  scale, in float64 sums so that 60,000 images lose no precision."""
  pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
  std = np.maximum(pixels.std(axis=0), 1e-3)  # A constant channel must not divide by zero.
  return tuple(float(v) for v in pixels.mean(axis=0)), tuple(float(v) for v in std)
