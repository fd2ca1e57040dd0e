"""Transforms of single images, below every source and the pipeline: encoded images (JPEG,
PNG) decoded into uint8 tensors of one shape, resizing, and per-channel statistics.

data/ flows one way: this module and the format readers (idx_files, image_folder) at the
bottom, augment and transforms above them, then tfrecords and sources, input_pipeline on top.
Nothing here imports another module of data/.
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


def channel_statistics(images: np.ndarray, scale: float = 255.0):
  """(mean, std) per channel of uint8 `images` [N, height, width, channels] (or floats, with
  their `scale`), on the [0, 1] scale, in float64 sums so that 60,000 images lose no precision."""
  pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / scale
  std = np.maximum(pixels.std(axis=0), 1e-3)  # A constant channel must not divide by zero.
  return tuple(float(v) for v in pixels.mean(axis=0)), tuple(float(v) for v in std)


# ---------------------------------------------------------------- Crops of the original image.
# Images above SMALL_IMAGE_MAX pixels on their longer side, resized to the size trained on,
# are held encoded and transformed one by one, from the original: the ImageNet recipe of the
# TPU reference models, Model Garden and torchvision. Up to it (MNIST, CIFAR) images are decoded
# once at their size and augmented as whole batches (trainer.data.augment).
SMALL_IMAGE_MAX = 64  # As the ResNets' stem: the CIFAR recipe up to here, ImageNet's above.
CROP_AREA_RANGE = (0.08, 1.0)  # Of the original image's area.
CROP_ASPECT_RANGE = (3 / 4, 4 / 3)  # Width over height.
CROP_ATTEMPTS = 10  # Then the evaluation's centre crop.
DEFAULT_EVAL_CROP = 0.875  # 224 of 256: the shorter side resized to size / 0.875, centred.


def example_seed(seed, epoch, position) -> tf.Tensor:
  """The stateless seed of one training example: a function of (seed, epoch, its position in
  the epoch) alone, so a resumed run draws the same crops and flips as an uninterrupted one."""
  return tf.random.experimental.stateless_fold_in(
      tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]), tf.cast(position, tf.int64))


def center_crop_window(height: tf.Tensor, width: tf.Tensor, size: Sequence[int],
                       eval_crop: float) -> tf.Tensor:
  """[top, left, height, width] of the centred box of `size`'s aspect ratio that covers
  `eval_crop` of the largest such box inside a height x width image.

  For a square `size` this is the centre square of side eval_crop x the shorter side: resizing
  it to `size` equals resizing the shorter side to size / eval_crop and cropping the centre.
  """
  height_f, width_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  scale = tf.minimum(height_f / size[0], width_f / size[1]) * eval_crop
  crop_height = tf.clip_by_value(tf.cast(size[0] * scale, tf.int32), 1, height)
  crop_width = tf.clip_by_value(tf.cast(size[1] * scale, tf.int32), 1, width)
  return tf.stack([(height - crop_height + 1) // 2, (width - crop_width + 1) // 2,
                   crop_height, crop_width])


def random_crop_window(height: tf.Tensor, width: tf.Tensor, seed: tf.Tensor, size: Sequence[int],
                       eval_crop: float) -> tf.Tensor:
  """[top, left, height, width] of a random box of CROP_AREA_RANGE of the image's area with an
  aspect ratio in CROP_ASPECT_RANGE, drawn statelessly from `seed` in up to CROP_ATTEMPTS
  tries; when every try fails (TensorFlow then returns the whole image), the centre crop."""
  begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.stack([height, width, 1]), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=CROP_AREA_RANGE[0], aspect_ratio_range=CROP_ASPECT_RANGE,
      area_range=CROP_AREA_RANGE, max_attempts=CROP_ATTEMPTS, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], box_size[0], box_size[1]])
  whole = tf.logical_and(tf.equal(box_size[0], height), tf.equal(box_size[1], width))
  return tf.cond(whole, lambda: center_crop_window(height, width, size, eval_crop),
                 lambda: window)


def decode_window(image_bytes: tf.Tensor, channels: int, choose_window) -> tf.Tensor:
  """The uint8 pixels of the window `choose_window(height, width)` picks in an encoded image.

  A JPEG's size comes from its header and only the window is decoded (decode_and_crop_jpeg
  skips the rest's inverse DCT); other formats (PNG) are decoded whole, then cropped.
  """
  def jpeg():
    shape = tf.image.extract_jpeg_shape(image_bytes)
    return tf.image.decode_and_crop_jpeg(image_bytes, choose_window(shape[0], shape[1]),
                                         channels=channels)

  def other():
    image = tf.io.decode_image(image_bytes, channels=channels, expand_animations=False)
    shape = tf.shape(image)
    top, left, height, width = tf.unstack(choose_window(shape[0], shape[1]))
    return image[top:top + height, left:left + width]

  return tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)


def training_image(image_bytes: tf.Tensor, seed: tf.Tensor, image_shape: Sequence[int],
                   kind: str, eval_crop: float = DEFAULT_EVAL_CROP) -> tf.Tensor:
  """One training image from its encoded bytes, as float32 on the [0, 1] scale of
  `image_shape`: under `kind` crop_flip a random box of the original (random_crop_window), else
  the evaluation's centre crop; resized (bilinear); mirrored with probability 1/2 unless `kind`
  is none. Every choice comes from `seed` (example_seed)."""
  size, channels = tuple(image_shape[:2]), image_shape[2]
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  if kind == "crop_flip":
    window = lambda height, width: random_crop_window(height, width, crop_seed, size, eval_crop)
  else:
    window = lambda height, width: center_crop_window(height, width, size, eval_crop)
  image = _resized(decode_window(image_bytes, channels, window), size)
  if kind != "none":
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return tf.ensure_shape(image, image_shape)


def evaluation_image(image_bytes: tf.Tensor, image_shape: Sequence[int],
                     eval_crop: float = DEFAULT_EVAL_CROP) -> tf.Tensor:
  """One evaluation image from its encoded bytes, float32 on the [0, 1] scale: the centre crop
  that keeps the aspect ratio (center_crop_window), resized (bilinear)."""
  size, channels = tuple(image_shape[:2]), image_shape[2]
  window = lambda height, width: center_crop_window(height, width, size, eval_crop)
  return tf.ensure_shape(_resized(decode_window(image_bytes, channels, window), size),
                         image_shape)


def _resized(image: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
  # Bilinear without antialiasing, as the reference pipelines resize: most crops are
  # within 2x of the size trained on.
  return tf.image.resize(image, size, method="bilinear") / 255.0
