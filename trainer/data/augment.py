"""Augmentation of training batches inside tf.data, never in the model (as big_vision's pp/ and
Model Garden's preprocess_ops do it).

  none       the images as they are
  flip       a horizontal flip of each image with probability 1/2
  crop_flip  for images up to SMALL_IMAGE_MAX pixels, zero-pad by PAD pixels and crop back at a
             random offset (the CIFAR recipe); above it, a random-resized crop (area 8% to 100%,
             aspect ratio 3/4 to 4/3, resized back to the image size) of images held at the size
             trained on; then the flip. Images above it held encoded are cropped from their
             originals one by one instead (preprocessing.training_image).

Every random choice is a stateless function of (seed, epoch, step) and the image's row in the
global batch: the same run sees the same augmented batches, a resumed run the same ones as an
uninterrupted run, bit for bit under --deterministic, and a worker that makes only its rows of
a global batch (`rows`) the same rows as one process making all of it. Each batch is augmented in a few vectorised ops, in tf.data's threads on the
CPU.
"""

import tensorflow as tf

from trainer.data import preprocessing

SMALL_IMAGE_MAX = preprocessing.SMALL_IMAGE_MAX  # The CIFAR recipe up to here, ImageNet's above.
PAD = 4
MIN_AREA, MAX_AREA = 0.08, 1.0
MIN_RATIO, MAX_RATIO = 3 / 4, 4 / 3


def batch_seed(seed, epoch, step) -> tf.Tensor:
  """The stateless seed of one training batch: a function of (seed, epoch, step) alone."""
  return tf.random.experimental.stateless_fold_in(
      tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]), tf.cast(step, tf.int64))


def augment_batch(images: tf.Tensor, seed: tf.Tensor, kind: str, rows=None) -> tf.Tensor:
  """`images` ([batch, height, width, channels], float) augmented as `kind` with `seed`.

  `rows` (first, global batch size) says the images are those rows of a larger batch: the
  random draws are made for the whole batch and these rows' kept, so they are augmented as
  they would be among all of it. None: `images` are the whole batch.
  """
  if kind == "none":
    return images
  rows = rows or (0, tf.shape(images)[0])
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  if kind == "crop_flip":
    height, width = images.shape[1], images.shape[2]
    if max(height, width) <= SMALL_IMAGE_MAX:
      images = pad_and_crop(images, crop_seed, rows)
    else:
      images = random_resized_crop(images, crop_seed, rows)
  return random_flip(images, flip_seed, rows)


def _draws(shape, seed, rows, **kwargs) -> tf.Tensor:
  """Stateless uniform draws for every row of the global batch (`rows`: first, size), sliced to
  this batch's rows."""
  first, size = rows
  drawn = tf.random.stateless_uniform([size, *shape[1:]], seed, **kwargs)
  return drawn[first:first + shape[0]]


def random_flip(images: tf.Tensor, seed: tf.Tensor, rows=None) -> tf.Tensor:
  """Each image mirrored left to right with probability 1/2."""
  batch = tf.shape(images)[0]
  flip = _draws([batch], seed, rows or (0, batch)) < 0.5
  return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


def pad_and_crop(images: tf.Tensor, seed: tf.Tensor, rows=None) -> tf.Tensor:
  """Each image zero-padded by PAD pixels on every side and cropped back to its size at a
  random offset: an exact shift of whole pixels (gathered, not resampled)."""
  batch = tf.shape(images)[0]
  height, width = images.shape[1], images.shape[2]
  padded = tf.pad(images, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]])
  offsets = _draws([batch, 2], seed, rows or (0, batch), maxval=2 * PAD + 1, dtype=tf.int32)
  rows = offsets[:, :1] + tf.range(height)[None, :]
  columns = offsets[:, 1:] + tf.range(width)[None, :]
  images = tf.gather(padded, rows, axis=1, batch_dims=1)
  return tf.gather(images, columns, axis=2, batch_dims=1)


def random_resized_crop(images: tf.Tensor, seed: tf.Tensor, rows=None) -> tf.Tensor:
  """Each image cropped to a random box of MIN_AREA to MAX_AREA of its area and an aspect ratio
  between MIN_RATIO and MAX_RATIO, then resized back to its size (bilinear)."""
  batch = tf.shape(images)[0]
  rows = rows or (0, batch)
  height, width = images.shape[1], images.shape[2]
  area_seed, ratio_seed, position_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 3))
  area = _draws([batch], area_seed, rows, minval=MIN_AREA, maxval=MAX_AREA)
  log_ratio = _draws([batch], ratio_seed, rows, minval=tf.math.log(MIN_RATIO),
                     maxval=tf.math.log(MAX_RATIO))
  ratio = tf.exp(log_ratio)
  # Box sides as fractions of the image's; a box that would not fit is clipped to the image.
  box_height = tf.minimum(tf.sqrt(area / ratio), 1.0)
  box_width = tf.minimum(tf.sqrt(area * ratio), 1.0)
  position = _draws([batch, 2], position_seed, rows)
  top = position[:, 0] * (1.0 - box_height)
  left = position[:, 1] * (1.0 - box_width)
  boxes = tf.stack([top, left, top + box_height, left + box_width], axis=1)
  return tf.image.crop_and_resize(images, boxes, tf.range(batch), (height, width))
