"""tf.data input: real images (trainer.data.sources) or synthetic data, in global batches.

One process yields whole global batches, which tf.distribute splits across its replicas. Under
several workers each yields only its part of every global batch, chosen before anything is
decoded: its slice of the global batch (sharding "data": the rows a single process would give
its replicas, so every step trains on the same examples, worker by worker, as one process), or
a batch of its own files (sharding "file": TFRecord shards, enough files for every worker).
Each epoch's order is a permutation seeded by (seed, epoch), so the batches from any global step
on can be rebuilt exactly.
"""

import dataclasses
import functools
import os
from typing import Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from trainer import config as config_lib
from trainer.data import idx_files
from trainer.data import image_folder
from trainer.data import preprocessing
from trainer.data import service
from trainer.data import sources
from trainer.data import tfrecords
from trainer.data import transforms
from trainer import errors

IMAGE_SHAPE = (*idx_files.IMAGE_SHAPE, 1)  # One channel, as Keras image layers expect.
NUM_CLASSES = idx_files.NUM_CLASSES
SYNTHETIC_TRAIN_SIZE = 60_000
# Synthetic data's test split, in global batches: its accuracy means nothing, so a few batches
# check that evaluation runs without paying for thousands of random images.
SYNTHETIC_TEST_BATCHES = 4
SYNTHETIC_POOL_BATCHES = 16
# Scaled float32 images held in memory at most: the synthetic pool, and a cached test split (an
# ImageNet-shaped batch of 256 is 154 MB, so such a pool is 3 batches).
CACHE_BYTES = 512 * 2**20
NORMALIZATION_EXAMPLES = 10_000  # A stream's per-channel statistics come from its first ones.
Split = sources.Split


def _dataset_options() -> tf.data.Options:
  options = tf.data.Options()
  # DATA: every worker builds the same batch order and keeps its own slice of each batch. The
  # arrays live in memory, so there are no files to shard by, and AUTO would only warn about that.
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  options.deterministic = True
  return options


@dataclasses.dataclass(frozen=True)
class InputPipeline:
  """What a run trains and evaluates on, and the datasets that serve it in global batches.

  A real dataset's examples come from its `source` (trainer.data.sources: held in memory as
  uint8 arrays or encoded bytes, or streamed from disk), each epoch's as this process's rows;
  the pipeline makes them ready with trainer.data.transforms: decode-and-crop each encoded image
  on its own seed, or augment each batch of pixels on the batch's, normalise, batch; and
  serves them here, or through a tf.data service. Synthetic data has no source: it is made
  inside tf.data.
  """

  global_batch_size: int
  seed: int
  steps_per_epoch: int
  eval_steps: int
  num_test_examples: int  # What an evaluation covers: the test split, or its --eval_steps part.
  image_shape: Tuple[int, int, int]
  num_classes: int
  name: str = "synthetic"  # What the records call the dataset, e.g. mnist or folder:flowers.
  source: Optional[sources.Source] = None  # None: synthetic.
  augment: str = "none"  # trainer.data.augment's kinds; training batches only.
  # Per-channel (mean, std) of the training split on the [0, 1] scale, or None: subtracted and
  # divided out of training and test images alike.
  normalization: transforms.Normalization = None
  # How the processes share the training data (see the module docstring): "none" (one
  # process), "data" (each makes its slice of every global batch) or "file" (its own files).
  sharding: str = "none"
  num_inputs: int = 1  # Processes that read training data.
  input_index: int = 0  # This process among them.
  test_split_size: int = 0  # Every test example; 0: num_test_examples, the whole split.
  # --num_test_examples: the run's last evaluation covers the first this many of the test split,
  # in its order; 0 covers it whole.
  final_test_limit: int = 0
  # Images are JPEG/PNG bytes, transformed one by one from the original
  # (transforms.decoded_and_cropped, evaluation_image); eval_crop is the evaluation's centre crop.
  encoded: bool = False
  eval_crop: float = preprocessing.DEFAULT_EVAL_CROP
  data_service: str = ""  # A tf.data service dispatcher's HOST:PORT makes the training batches.
  # The training split as files read by path (image folders, TFRecord shards; see
  # sources.Loaded.files): what a tf.data service's workers read, instead of data in its graph.
  files: Optional[sources.Stream] = None

  def bounded(self, max_steps_per_epoch: int = 0, eval_steps: int = 0) -> "InputPipeline":
    """This pipeline within the loop's bounds (--max_steps_per_epoch, --eval_steps; 0: none):
    epochs of at most that many steps, evaluations during training of that many batches."""
    steps_per_epoch, num_test = self.steps_per_epoch, self.num_test_examples
    if max_steps_per_epoch:
      steps_per_epoch = min(steps_per_epoch, max_steps_per_epoch)
    if eval_steps:
      num_test = min(num_test, eval_steps * self.global_batch_size)
    return dataclasses.replace(self, steps_per_epoch=steps_per_epoch, num_test_examples=num_test,
                               eval_steps=-(-num_test // self.global_batch_size))

  def final_test_split(self) -> "InputPipeline":
    """This pipeline with --eval_steps lifted: its eval_dataset covers the examples of the run's
    last evaluation (results.json's figures, trainer.evaluate): the whole test split, or its
    first --num_test_examples."""
    size = self.test_split_size or self.num_test_examples
    if self.final_test_limit:
      size = min(size, self.final_test_limit)
    return dataclasses.replace(self, num_test_examples=size,
                               eval_steps=-(-size // self.global_batch_size))

  @property
  def synthetic(self) -> bool:
    return self.source is None

  @property
  def stream(self) -> Optional[sources.Stream]:
    """The source when it is read from disk at every epoch; None when held or synthetic."""
    return self.source if isinstance(self.source, sources.Stream) else None

  @property
  def train(self) -> Optional[sources.Split]:
    """The training split held in memory (this process's files' alone, sharded by file)."""
    return getattr(self.source, "train", None)

  @property
  def test(self) -> Optional[sources.Split]:
    return getattr(self.source, "test", None)

  @property
  def per_process(self) -> bool:
    """True when each training element is this process's part of the global batch."""
    return self.sharding != "none"

  @property
  def train_batch_size(self) -> int:
    """Examples per training element: the global batch, or this process's part of it."""
    if self.per_process:
      return self.global_batch_size // self.num_inputs
    return self.global_batch_size

  @property
  def _rows(self) -> transforms.Rows:
    """This process's rows of the epoch's order: its slice of each global batch, or, reading
    only its own files (or alone), all of its own order."""
    if self.sharding == "data":
      return transforms.Rows(self.input_index * self.train_batch_size, self.global_batch_size,
                             self.train_batch_size)
    return transforms.Rows(0, self.train_batch_size, self.train_batch_size)

  def _ready(self, epoch, batches: tf.data.Dataset) -> tf.data.Dataset:
    """A source's batches of `epoch` (positions, images, labels) made ready for training: each
    encoded image decoded and cropped on its own seed, then batched again; or each batch of
    pixels scaled, augmented on its step's seed and normalised."""
    if self.encoded:
      return transforms.batched(batches.unbatch().map(
          lambda position, image_bytes, label: (transforms.decoded_and_cropped(
              image_bytes, self.seed, epoch, position, self.image_shape, self.augment,
              self.eval_crop, self.normalization), label),
          num_parallel_calls=transforms.PARALLEL_DECODES, deterministic=True),
        self.train_batch_size)
    stride = self._rows.stride
    return batches.map(
        lambda positions, images, labels: (transforms.augmented_batch(
            images, self.seed, epoch, positions[0] // stride, self.augment, self._rows,
            self.normalization), labels),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def _epoch(self, epoch, first_step) -> tf.data.Dataset:
    """This process's batches of `epoch` from step `first_step` on, ready: examples before it
    are never decoded."""
    return self._ready(epoch, self.source.epoch_batches(epoch, self._rows, first_step,
                                                        self.steps_per_epoch - first_step))

  def train_dataset(self, epoch: int, start_step: int = 0) -> tf.data.Dataset:
    """Returns the global batches of `epoch` from `start_step` on: (images, labels)."""
    return self.training_batches(epoch * self.steps_per_epoch + start_step, epoch + 1)

  def training_batches(self, start_step: int, num_epochs: int,
                       pack: int = 1) -> tf.data.Dataset:
    """Returns every global batch of the run from global step `start_step` to `num_epochs` end.

    One dataset for the whole run, so prefetching prepares the next epoch while the current one
    trains; the batches are the same as epoch-by-epoch, so resuming at any step is exact. With
    `pack` > 1 each element stacks that many consecutive batches, for a training step function
    that runs them all in one call; it must divide the steps from `start_step` to the end.
    """
    num_steps = num_epochs * self.steps_per_epoch - start_step
    first_epoch, steps_into_it = divmod(start_step, self.steps_per_epoch)
    if self.data_service:
      # Endless: later batches replace those a lost worker took (see trainer.data.service).
      dataset = service.served(self.service_batches(start_step), self.data_service).take(
          num_steps)
    elif self.synthetic:
      # A few batches drawn once and cycled: serving them costs a copy, so synthetic runs
      # measure compute alone, at any image size.
      pool = tf.data.Dataset.range(self._synthetic_pool_batches()).map(
          lambda index: self._synthetic_rows([self.seed, 0, index]))
      dataset = pool.cache().repeat().skip(start_step).take(num_steps)
    elif self.source.by_position:  # One dataset over the epochs, traced once.
      dataset = tf.data.Dataset.range(first_epoch, num_epochs).flat_map(
          lambda epoch: self._epoch(epoch, tf.where(
              epoch == first_epoch, tf.constant(steps_into_it, tf.int64), 0)))
    else:  # A stream's epochs are read one by one, each in its own order.
      dataset = functools.reduce(tf.data.Dataset.concatenate, [
          self._epoch(epoch, steps_into_it if epoch == first_epoch else 0)
          for epoch in range(first_epoch, num_epochs)])
    if pack > 1:
      dataset = dataset.batch(pack, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(_dataset_options())

  def service_batches(self, start_step: int) -> tf.data.Dataset:
    """What a tf.data service runs for this process from `start_step` on, without end: each
    step's batch alone (batches_by_step), or for TFRecord shards, which cannot be read by
    position, batches of each epoch's records read file by file (_batches_by_file)."""
    if self.files is not None and not self.files.by_position:
      return self._batches_by_file(start_step)
    return self.batches_by_step(start_step)

  def batches_by_step(self, start_step: int) -> tf.data.Dataset:
    """Every global batch from `start_step` on, without end, each made from its step alone.

    The batch of a step equals training_batches' (same permutation, same augmentation seeds),
    but nothing carries from one step to the next, so a tf.data service may hand the steps to
    its workers in any split. Each step redoes its epoch's permutation (a shuffle of the split's
    indices: milliseconds) instead of gathering a whole epoch. An image folder's examples are
    read from their files by path, so only paths travel in the graph; other data is held.
    """
    if self.synthetic:
      pool_batches = self._synthetic_pool_batches()
      return tf.data.Dataset.range(start_step, tf.int64.max).map(
          lambda step: self._synthetic_rows([self.seed, 0, step % pool_batches]))
    source = self.files or self.source
    return tf.data.Dataset.range(start_step, tf.int64.max).flat_map(
        lambda step: self._ready(step // self.steps_per_epoch, source.epoch_batches(
            step // self.steps_per_epoch, self._rows, step % self.steps_per_epoch, 1)))

  def _batches_by_file(self, start_step: int) -> tf.data.Dataset:
    """TFRecord shards for a tf.data service, from `start_step` on, without end: each epoch's
    records (this process's files, or its slice of each global batch's positions), each made
    once by the worker that reads its file, cropped and flipped on its own seed (seed, epoch,
    position), normalised and batched there. The batches are not the local run's, whose order
    comes from one reader's interleave and shuffle; see trainer.data.service."""
    first_epoch, steps_into_it = divmod(start_step, self.steps_per_epoch)
    stride = self._rows.stride
    records = self.files.records_by_file(first_epoch, steps_into_it * stride,
                                         self.steps_per_epoch * stride)
    if self.sharding == "data":
      records = records.filter(lambda epoch, position, record: self._rows.mine(position))

    def prepared(epoch, position, record):
      image, label = self.files.decode(record)
      if self.encoded:
        return transforms.decoded_and_cropped(
            image, self.seed, epoch, position, self.image_shape, self.augment, self.eval_crop,
            self.normalization), label
      return transforms.augmented_example(image, self.seed, epoch, position, self.augment,
                                          self.normalization), label

    return transforms.batched(
        records.map(prepared, num_parallel_calls=transforms.PARALLEL_DECODES),
        self.train_batch_size)

  def eval_dataset(self) -> tf.data.Dataset:
    """Returns the whole test split in global batches: (images, labels, weights).

    The last batch is padded to full size with weight 0, so every batch splits evenly across
    replicas and every test example counts exactly once.
    """
    num_padded = self.eval_steps * self.global_batch_size
    weights = np.zeros(num_padded, np.float32)
    weights[:self.num_test_examples] = 1.0
    index = np.zeros(num_padded, np.int32)
    index[:self.num_test_examples] = np.arange(self.num_test_examples)
    batches = tf.data.Dataset.from_tensor_slices((
        index.reshape(self.eval_steps, -1), weights.reshape(self.eval_steps, -1)))
    if self.synthetic:
      # A fixed test set, drawn from a seed stream the training batches never use.
      dataset = batches.enumerate().map(lambda step, batch: (*self._synthetic_batch(
          [self.seed, -1, step]), batch[1]))
    elif self.encoded or self.stream is not None:
      examples = self.source.test_examples().take(self.num_test_examples)
      if self.encoded:  # Each image's centre crop at its own aspect ratio: never squashed.
        examples = examples.map(
            lambda image_bytes, label: (transforms.evaluation_image(
                image_bytes, self.image_shape, self.eval_crop, self.normalization), label),
            num_parallel_calls=transforms.PARALLEL_DECODES, deterministic=True)
        padding, prepared = tf.zeros(self.image_shape, tf.float32), lambda images: images
      else:
        padding, prepared = tf.zeros(self.image_shape, tf.uint8), self._prepare
      examples = examples.concatenate(tf.data.Dataset.from_tensors(
          (padding, tf.constant(0, tf.int32))).repeat(num_padded - self.num_test_examples))
      dataset = tf.data.Dataset.zip(examples, tf.data.Dataset.from_tensor_slices(weights)).map(
          lambda example, weight: (prepared(example[0]), example[1], weight)).batch(
              self.global_batch_size)
    else:  # Pixels held in memory: each batch one gather.
      def gathered(index, weight):
        images, labels = self.source.test_batch(index)
        return self._prepare(images), labels, weight
      dataset = batches.map(gathered)
    if self.stream is None and self._float_bytes(num_padded) <= CACHE_BYTES:
      # Scaled once; a streamed test split, or a large one, is made again at each evaluation.
      dataset = dataset.cache()
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(_dataset_options())

  def _prepare(self, images: tf.Tensor) -> tf.Tensor:
    """uint8 test images scaled to [0, 1] and, with a normalization, standardised."""
    return transforms.normalise(transforms.scale(images), self.normalization)

  def _synthetic_rows(self, key) -> Tuple[tf.Tensor, tf.Tensor]:
    """This process's rows of the synthetic global batch of `key`."""
    images, labels = self._synthetic_batch(key)
    if self.sharding != "data":
      return images, labels
    rows = self._rows
    return images[rows.first:rows.first + rows.width], labels[rows.first:rows.first + rows.width]

  def _synthetic_batch(self, key) -> Tuple[tf.Tensor, tf.Tensor]:
    return sources.synthetic_batch(key, self.global_batch_size, self.image_shape,
                                   self.num_classes)

  def _synthetic_pool_batches(self) -> int:
    return min(SYNTHETIC_POOL_BATCHES, self.steps_per_epoch,
               max(1, CACHE_BYTES // self._float_bytes(self.global_batch_size)))

  def _float_bytes(self, num_examples: int) -> int:
    return num_examples * int(np.prod(self.image_shape)) * 4


def _load(data: config_lib.DataConfig, input_index: int, num_inputs: int) -> sources.Loaded:
  """Reads the real dataset that `data` names, from --data_dir or through tfds."""
  limit = sources.memory_limit_bytes(data.memory_limit_mb)
  if data.data_dir:
    data_dir = os.path.expanduser(data.data_dir)
    if not os.path.isdir(data_dir):
      raise errors.UserError(f"--data_dir={data.data_dir} is not a folder.")
    if tfrecords.is_tfrecord_folder(data_dir):
      _refuse_dataset_name(data, "holds TFRecord shards")
      _refuse_folder_flags(data, "TFRecord shards")
      return sources.load_tfrecords(data_dir, data.label_offset, data.image_size,
                                    data.seed, limit, input_index, num_inputs)
    if data.label_offset:
      raise errors.UserError("--label_offset applies to TFRecord shards (train-* and "
                             "validation-* files); this --data_dir holds none. Leave it out.")
    if image_folder.is_image_folder(data_dir):
      _refuse_dataset_name(data, "is a folder of images")
      return sources.load_image_folder(data_dir, data.image_size, data.validation_split,
                                       data.seed, limit)
    _refuse_folder_flags(data, "--data_dir with IDX files")
    return sources.load_idx(data_dir, data.dataset, data.image_size)
  return sources.load_tfds(data.dataset or "mnist", data.tfds_data_dir,
                           data.image_size, data.seed, limit)


def _refuse_dataset_name(data: config_lib.DataConfig, what: str) -> None:
  if data.dataset:
    raise errors.UserError(
        f"--data_dir={data.data_dir} {what}, named by the folder; --dataset={data.dataset} "
        "names a tensorflow-datasets dataset. Leave --dataset out.")


def _refuse_folder_flags(data: config_lib.DataConfig, source: str) -> None:
  if data.validation_split is not None:
    raise errors.UserError(f"--validation_split applies to a folder of images, not to {source}, "
                           "which has its own test split. Leave it out.")


def _normalization(data: config_lib.DataConfig, loaded: sources.Loaded):
  """Per-channel (mean, std) on the [0, 1] scale for --normalize, the same on every process:
  as the converter recorded them, else from the training split in memory, else from the first
  NORMALIZATION_EXAMPLES of a stream in its epoch-0 order.

  Workers that each read only their own training files and have no recorded statistics take
  them from the first test examples instead, which every worker reads alike.
  """
  if not data.normalize:
    return None
  if loaded.recorded_normalization is not None:
    return loaded.recorded_normalization
  if loaded.sharding == "file":
    logging.info("--normalize: per-channel statistics from the first %d test examples, the same "
                 "on every worker (dataset.json records none).", NORMALIZATION_EXAMPLES)
    split, stream_examples = loaded.test, lambda: loaded.stream.test_examples()
  else:
    split, stream_examples = loaded.train, lambda: loaded.stream.train_examples(0)
  if loaded.encoded:
    # The statistics of what evaluation sees, from the first examples' centre crops.
    examples = (tf.data.Dataset.from_tensor_slices(split.images) if split is not None
                else stream_examples().map(lambda image_bytes, label: image_bytes))
    images = np.concatenate([batch.numpy() for batch in examples.take(
        NORMALIZATION_EXAMPLES).map(
            lambda image_bytes: preprocessing.evaluation_image(
                image_bytes, loaded.image_shape, data.eval_crop),
            num_parallel_calls=tf.data.AUTOTUNE).batch(256)])
    return preprocessing.channel_statistics(images, scale=1.0)
  if split is not None:
    images = split.images[:None if split is loaded.train else NORMALIZATION_EXAMPLES]
  else:
    images = np.concatenate([batch.numpy() for batch, _ in stream_examples().take(
        NORMALIZATION_EXAMPLES).batch(1024)])
  return preprocessing.channel_statistics(images)


def make_input_pipeline(data: config_lib.DataConfig, input_index: int = 0,
                        num_inputs: int = 1) -> InputPipeline:
  """Loads the dataset that `data` names and returns the pipeline that batches it, for
  process `input_index` of the `num_inputs` that read training data (the workers of a cluster:
  TFRecord shards are then split among them by file): whole epochs, evaluations of the whole
  test split (or its first --num_test_examples); `InputPipeline.bounded` applies the loop's
  bounds."""
  if data.data_service:
    service.check_reachable(data.data_service)  # Before the data loads: seconds, not minutes.
  if data.dataset == "synthetic":
    num_test = data.num_test_examples or SYNTHETIC_TEST_BATCHES * data.batch_size
    loaded = sources.Loaded("synthetic", tuple(data.image_shape) or IMAGE_SHAPE,
                            data.num_classes or NUM_CLASSES, SYNTHETIC_TRAIN_SIZE, num_test)
  else:
    loaded = _load(data, input_index, num_inputs)
  if loaded.train is not None or loaded.stream is not None:
    logging.info("%s", loaded.describe())
  if data.data_service:
    service.check_servable(data.data_service, loaded)
    service.log_guarantees(data.data_service, loaded, data.data_dir)
  sharding = loaded.sharding if loaded.sharding == "file" else (
      "data" if num_inputs > 1 else "none")
  if sharding != "none":
    logging.info("Training data sharded by %s over %d workers: %s.", sharding, num_inputs,
                 "each reads only its own files" if sharding == "file"
                 else "each decodes only its slice of every global batch")
  batch = data.batch_size
  steps_per_epoch = loaded.num_train // batch
  if steps_per_epoch == 0:
    raise errors.UserError(
        f"--batch_size={batch} is larger than the {loaded.num_train} training examples.")
  num_test = loaded.num_test
  if data.num_test_examples:
    num_test = min(num_test, data.num_test_examples)
  return InputPipeline(
      global_batch_size=batch, seed=data.seed, steps_per_epoch=steps_per_epoch,
      eval_steps=-(-num_test // batch), num_test_examples=num_test,
      image_shape=tuple(int(size) for size in loaded.image_shape),
      num_classes=int(loaded.num_classes), name=loaded.name,
      source=sources.Held(loaded.train, loaded.test, data.seed) if loaded.train is not None
      else loaded.stream, augment=data.augment,
      normalization=_normalization(data, loaded), sharding=sharding,
      num_inputs=num_inputs, input_index=input_index, test_split_size=loaded.num_test,
      final_test_limit=data.num_test_examples, encoded=loaded.encoded,
      eval_crop=data.eval_crop, data_service=data.data_service,
      files=loaded.files if data.data_service else None)
