"""The named steps between a source's examples and the model's batches, which
trainer.data.input_pipeline composes (as big_vision's pp/ composes its ops): this worker's rows,
decode-and-crop an encoded example, scale, augment a batch, normalise, batch.

Each is a function of its arguments and of stateless seeds (seed, epoch, step or position)
alone, so that a resumed run, and a worker making only its rows, make the same values bit for
bit as one uninterrupted process.
"""

import dataclasses
from typing import Optional, Sequence, Tuple

import tensorflow as tf

from trainer.data import augment
from trainer.data import preprocessing

# Images decoded and cropped at once from their originals: tf.data's AUTOTUNE, which beat a
# fixed 2x the cores. Each image is flipped and scaled in the same map, since tf.data runs a
# batch's ops on one thread; the order is kept, as resuming needs (docs/measurements.md,
# "Data: image folders, input pipeline, data service").
PARALLEL_DECODES = tf.data.AUTOTUNE
Normalization = Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]


@dataclasses.dataclass(frozen=True)
class Rows:
  """Which examples of each step's place in the epoch's order this process makes: `width` of
  them from `first` in every `stride` (its slice of each global batch under "data" sharding;
  all of its own order when it reads only its own files, or alone)."""

  first: int
  stride: int
  width: int

  def positions(self, num_steps, first_step=0) -> tf.Tensor:
    """Its positions in the epoch's order over `num_steps` steps from `first_step`: the seeds of
    its examples' crops (preprocessing.example_seed) and what it gathers."""
    steps = tf.range(first_step, first_step + num_steps, dtype=tf.int64)
    return tf.reshape(steps[:, None] * self.stride + self.first
                      + tf.range(self.width, dtype=tf.int64)[None, :], [-1])

  def mine(self, position: tf.Tensor) -> tf.Tensor:
    """Whether the example at `position` of the epoch's order is one of its rows: a stream keeps
    its own before decoding any."""
    column = position % self.stride
    return tf.logical_and(column >= self.first, column < self.first + self.width)


def scale(images: tf.Tensor) -> tf.Tensor:
  """uint8 pixels to float32 on [0, 1], the scale every later step and the model expect."""
  return tf.cast(images, tf.float32) / 255.0


def normalise(images: tf.Tensor, normalization: Normalization) -> tf.Tensor:
  """Per-channel (mean, std) subtracted and divided out, the same for training and test images,
  so that the model sees the statistics it trained on; None leaves the images as they are."""
  if normalization is None:
    return images
  mean, std = normalization
  return (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def augmented_batch(images: tf.Tensor, seed, epoch, step, kind: str, rows: Rows,
                    normalization: Normalization) -> tf.Tensor:
  """A batch of uint8 images held at the size trained on, made ready for training: scaled,
  augmented with the batch's own seed (seed, epoch, step in the epoch) as the rows of the global
  batch they are, normalised. Whole batches at once: a few vectorised ops."""
  images = augment.augment_batch(scale(images), augment.batch_seed(seed, epoch, step), kind,
                                 rows=(rows.first, rows.stride))
  return normalise(images, normalization)


def augmented_example(image: tf.Tensor, seed, epoch, position, kind: str,
                      normalization: Normalization) -> tf.Tensor:
  """One uint8 image augmented on its own seed (seed, epoch, position): the batch augmentation
  drawn for this one example, where examples come without a batch's place (a tf.data service
  reading shards file by file)."""
  image = augment.augment_batch(
      scale(image)[None], preprocessing.example_seed(seed, epoch, position), kind)[0]
  return normalise(image, normalization)


def decoded_and_cropped(image_bytes: tf.Tensor, seed, epoch, position,
                        image_shape: Sequence[int], kind: str, eval_crop: float,
                        normalization: Normalization) -> tf.Tensor:
  """One training image from its encoded bytes: only its crop's window decoded, cropped and
  flipped on its own seed (seed, epoch, position in the epoch), resized, normalised. Cropping
  from the original keeps what squashing it once to the size would lose."""
  image = preprocessing.training_image(
      image_bytes, preprocessing.example_seed(seed, epoch, position), image_shape, kind,
      eval_crop)
  return normalise(image, normalization)


def evaluation_image(image_bytes: tf.Tensor, image_shape: Sequence[int], eval_crop: float,
                     normalization: Normalization) -> tf.Tensor:
  """One test image from its encoded bytes: its centre crop at its own aspect ratio, resized,
  never squashed; normalised."""
  return normalise(preprocessing.evaluation_image(image_bytes, image_shape, eval_crop),
                   normalization)


def batched(examples: tf.data.Dataset, size: int) -> tf.data.Dataset:
  """Examples into batches of `size`, an incomplete last one dropped: every step of a run has
  a full batch, which splits evenly across replicas."""
  return examples.batch(size, drop_remainder=True)
