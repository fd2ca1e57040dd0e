"""Encoded images (JPEG, PNG) decoded into uint8 tensors of one shape, for every source that
reads image files: folders and TFRecord shards."""

from typing import Sequence

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
