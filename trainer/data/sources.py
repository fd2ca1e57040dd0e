"""Where a run's images come from: IDX files, tensorflow-datasets, a folder of images or TFRecord
shards, read into a `Source` that the input pipeline composes its transforms onto; and the
synthetic source's random batches.

What is held: images resized to a size above preprocessing.SMALL_IMAGE_MAX that are not all
stored at that size are held *encoded* (their JPEG or PNG bytes), and the pipeline decodes,
crops and resizes each from the original at every epoch; squashing them to the size once would
lose what the crops and the aspect-preserving evaluation need. Every other dataset is held as
decoded uint8 images of the size trained on, since nothing is lost. Either way a source is read
into memory when it fits under the memory limit (--memory_limit_mb, by default a quarter of this
machine's RAM; the bytes held count): `Held`, read by position; and otherwise streamed from disk
at every epoch (a `Stream`): an image folder by its file list, by position too (in the same
order as in memory, so both give the same batches), shards and tfds datasets through their
readers (files shuffled by a per-epoch seed, then a shuffle buffer).

Image folders and TFRecord shards also keep their training split as files (`Loaded.files`),
held or streamed: a tf.data service's workers read those themselves, by path, so only paths and
labels travel to them (trainer.data.service).
"""

import dataclasses
import os
import socket
import urllib.parse
from typing import Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from trainer.data import idx_files
from trainer.data import image_folder
from trainer.data import preprocessing
from trainer.data import tfrecords
from trainer.data import transforms
from trainer import errors

_NETWORK_PROBE_SECONDS = 5.0
_DECODE_BATCH = 1024
STREAM_SHUFFLE_BUFFER = 10_000
# A tf.data service worker reading shards holds at most this share of an epoch's files open and
# of its records in its shuffle window, so that on a small dataset the epochs overlap little;
# ImageNet's 1,024 files still get the local stream's 16 files and 10,000 records.
SERVED_SHARE_IN_FLIGHT = 1 / 8


@dataclasses.dataclass(frozen=True)
class Split:
  """One split held in memory: uint8 images [N, height, width, channels], or when encoded the
  images' JPEG or PNG bytes [N] (an object array); int32 labels [N]."""

  images: np.ndarray
  labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A real dataset: its name, shapes, and either both splits in memory or a stream."""

  name: str
  image_shape: Tuple[int, int, int]
  num_classes: int
  num_train: int
  num_test: int
  train: Optional[Split] = None
  test: Optional[Split] = None
  stream: Optional["Stream"] = None
  # How the processes of a cluster share the training data: "none" (one process), "data"
  # (every process reads it all and keeps its slice of each global batch) or "file" (each reads
  # only its own files; `train` or `stream` is then this process's share alone).
  sharding: str = "none"
  # Per-channel (mean, std) of the training split on the [0, 1] scale, as trainer.tfrecords
  # recorded them; None when no converter recorded them.
  recorded_normalization: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]] = None
  # True when images are JPEG or PNG bytes, each transformed from the original per example
  # (see the module docstring); `encoded_bytes` is what both splits' bytes take.
  encoded: bool = False
  encoded_bytes: int = 0
  # The training split as files read by path (image folders, TFRecord shards), held or streamed:
  # what a tf.data service's workers read from shared storage. None for other sources.
  files: Optional["Stream"] = None

  @property
  def decoded_bytes(self) -> int:
    """What both splits take in memory as uint8 images of the size trained on."""
    return (self.num_train + self.num_test) * int(np.prod(self.image_shape))

  @property
  def held_bytes(self) -> int:
    """What holding both splits in memory takes: the figure the memory limit bounds."""
    return self.encoded_bytes if self.encoded else self.decoded_bytes

  def describe(self) -> str:
    """One line for the log: what is held, where, and what each epoch does with it."""
    where = "streamed from disk at every epoch" if self.stream else (
        f"held in memory ({self.held_bytes / 2**20:,.0f} MB)")
    size = f"{self.image_shape[0]}x{self.image_shape[1]}"
    if self.encoded:
      return (f"Images {where} encoded, as JPEG/PNG bytes: each is decoded, cropped from the "
              f"original and resized to {size} per example, at every epoch.")
    return f"Images {where} decoded, as {size} uint8 pixels."


def holds_encoded(stored_sizes, resize: Sequence[int]) -> bool:
  """True when images resized to `resize` should be held encoded: the size is above
  SMALL_IMAGE_MAX and some stored image (of `stored_sizes`, (height, width) pairs) is not
  already at it, so that decoding once at that size would lose part of the original."""
  return bool(resize) and max(resize) > preprocessing.SMALL_IMAGE_MAX and any(
      tuple(size) != tuple(resize) for size in stored_sizes)


class Source:
  """Where the pipeline reads a real dataset's examples from (trainer.data.input_pipeline
  composes the rest): this process's training examples of an epoch, and the test examples.

  `epoch_batches` gives a process's examples of `epoch` from `first_step` on as batches of its
  rows (transforms.Rows) of each step: (positions in the epoch's order, images, labels), where
  images are uint8 pixels of the size trained on, or the images' encoded bytes when held
  encoded; the positions seed each example's crop. `test_examples` gives (image, label) in the
  test split's order.
  """

  # True when any example can be read alone by its position in the epoch's order: `epoch` may
  # then be a tensor (one dataset over the run's epochs), and a tf.data service can make each
  # step's batch alone, as a local run makes it.
  by_position = False

  def epoch_batches(self, epoch, rows: transforms.Rows, first_step,
                    num_steps) -> tf.data.Dataset:
    raise NotImplementedError

  def test_examples(self) -> tf.data.Dataset:
    raise NotImplementedError


class Held(Source):
  """Both splits held in memory (Split), each epoch's examples gathered at once, by position,
  from the epoch's seeded permutation: serving a batch is then a slice."""

  by_position = True

  def __init__(self, train: Split, test: Split, seed: int):
    self.train, self.test, self._seed = train, test, seed
    # Made once, eagerly: dataset functions capture eager tensors by reference, while NumPy
    # arrays would be copied into every traced graph as constants (seconds for 47 MB).
    self._tensors = tuple(tf.constant(array) for array in (
        train.images, train.labels, test.images, test.labels))

  def epoch_batches(self, epoch, rows, first_step, num_steps):
    positions = tf.reshape(rows.positions(num_steps, first_step), [-1, rows.width])
    taken = tf.gather(epoch_order(len(self.train.labels), self._seed, epoch), positions)
    images, labels = self._tensors[:2]
    return tf.data.Dataset.from_tensor_slices((
        positions, tf.gather(images, taken), tf.gather(labels, taken)))

  def test_examples(self) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(self._tensors[2:])

  def test_batch(self, index: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """The test examples at `index` in one gather: an evaluation batch without a pass over the
    examples one by one."""
    return tf.gather(self._tensors[2], index), tf.gather(self._tensors[3], index)


class Stream(Source):
  """A dataset read from disk at every epoch.

  `train_records(epoch)` gives the epoch's examples undecoded (a file's path, a record, a tfds
  example), so that a worker can keep its own before paying for any decoding; `decode` turns
  one into (image, label): uint8 pixels of the size trained on, or the image's encoded bytes
  when the images are held encoded. `test_examples` gives the test split decoded.
  """

  def train_records(self, epoch: int) -> tf.data.Dataset:
    raise NotImplementedError

  def decode(self, record) -> Tuple[tf.Tensor, tf.Tensor]:
    raise NotImplementedError

  def test_examples(self) -> tf.data.Dataset:
    raise NotImplementedError

  def epoch_batches(self, epoch: int, rows, first_step, num_steps):
    """The epoch's records numbered by their position in it; this process keeps its own (its
    slice of each global batch) and those from `first_step` on before decoding any."""
    records = self.train_records(epoch).take((first_step + num_steps) * rows.stride).enumerate()
    if rows.width != rows.stride:
      records = records.filter(lambda position, record: rows.mine(position))
    return records.skip(first_step * rows.width).map(
        lambda position, record: (position, *self.decode(record)),
        num_parallel_calls=transforms.PARALLEL_DECODES, deterministic=True).batch(
            rows.width, drop_remainder=True)

  def train_examples(self, epoch: int) -> tf.data.Dataset:
    """The epoch's training examples decoded, in order."""
    # Numbered first, so that a record of several parts reaches `decode` as one.
    return self.train_records(epoch).enumerate().map(
        lambda position, record: self.decode(record), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)


def memory_limit_bytes(limit_mb: float) -> int:
  """The memory limit in bytes; 0 MB means a quarter of this machine's RAM."""
  if limit_mb:
    return int(limit_mb * 2**20)
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


# ---------------------------------------------------------------- Synthetic data.
def synthetic_batch(key, batch_size: int, image_shape: Sequence[int],
                    num_classes: int) -> Tuple[tf.Tensor, tf.Tensor]:
  """Random float32 images with a learnable label: the label's band of pixels is brighter.
  Made inside tf.data, so that a synthetic run needs no data at all.

  `key` is [seed, stream, index]: stream 0 is the training pool, -1 the test set, so the two
  never share a batch.
  """
  num_pixels = int(np.prod(image_shape))
  band = num_pixels // num_classes  # 78 of MNIST's 784 pixels for each of 10 classes.
  seed = tf.random.experimental.stateless_fold_in(
      tf.random.experimental.stateless_fold_in(tf.cast(key[:2], tf.int64), key[2]), 0)
  label_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  labels = tf.random.stateless_uniform([batch_size], label_seed, maxval=num_classes,
                                       dtype=tf.int32)
  noise = tf.random.stateless_uniform([batch_size, num_pixels], noise_seed)
  bands = tf.repeat(tf.one_hot(labels, num_classes), band, axis=1)
  images = 0.75 * noise + 0.25 * tf.pad(bands, [[0, 0], [0, num_pixels - band * num_classes]])
  return tf.reshape(images, (batch_size, *image_shape)), labels


# ---------------------------------------------------------------- IDX files.
def load_idx(data_dir: str, name: Optional[str], resize: Sequence[int] = ()) -> Loaded:
  """An MNIST-format dataset from its four IDX files (55 MB for MNIST: always in memory).

  Without a `name` (--dataset) the files say which dataset they are: MNIST and Fashion-MNIST
  are told apart by their labels; any other is recorded as idx:FOLDER, with a warning. With
  `resize` (height, width) every image is resized once, when read.
  """
  train_images, train_labels, test_images, test_labels = idx_files.read_mnist_format(data_dir)
  if resize:
    chunk = _DECODE_BATCH * 8
    train_images, test_images = (
        np.concatenate([preprocessing.resize_uint8(images[start:start + chunk], resize).numpy()
                        for start in range(0, len(images), chunk)])
        for images in (train_images, test_images))
  identified = idx_files.identify(train_labels)
  if name and identified and name != identified:
    logging.warning("--dataset=%s, but the files in %s hold %s; recorded as %s as given.",
                    name, data_dir, identified, name)
  if not name:
    name = identified or "idx:" + os.path.basename(os.path.normpath(data_dir))
    if not identified:
      logging.warning("The IDX files in %s are neither MNIST nor Fashion-MNIST; the run records "
                      "its dataset as %s. Name it with --dataset.", data_dir, name)
  return Loaded(name, train_images.shape[1:], idx_files.NUM_CLASSES, len(train_labels),
                len(test_labels), Split(train_images, train_labels),
                Split(test_images, test_labels))


# ---------------------------------------------------------------- Image folders.
@dataclasses.dataclass(frozen=True)
class _ImageFiles:
  """Turns a file path into a uint8 image of the dataset's shape."""

  image_shape: Tuple[int, int, int]
  resize: bool
  encoded: bool = False  # The file's bytes as they are, for a per-example transform.

  def load(self, path: tf.Tensor) -> tf.Tensor:
    if self.encoded:
      return tf.io.read_file(path)
    return preprocessing.decode(tf.io.read_file(path), self.image_shape, self.resize)

  def load_all(self, paths: np.ndarray) -> np.ndarray:
    """Decodes every file in `paths` into one uint8 array, in order (or, encoded, reads each
    file's bytes into an object array)."""
    if self.encoded:
      contents = np.empty(len(paths), dtype=object)
      for index, path in enumerate(paths):
        with open(path, "rb") as file:
          contents[index] = file.read()
      return contents
    dataset = tf.data.Dataset.from_tensor_slices(paths.astype(str)).map(
        self.load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    try:
      return np.concatenate([batch.numpy() for batch in dataset.batch(_DECODE_BATCH)])
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
      raise errors.UserError(
          f"{_first_bad_image(self, paths)} cannot be decoded ({errors.tensorflow_cause(e)}). "
          "Delete it or replace it with a good copy.") from None


def _first_bad_image(files: _ImageFiles, paths: np.ndarray) -> str:
  # Only after a failure: the batched decode does not say which file failed.
  for path in paths:
    try:
      files.load(tf.constant(str(path)))
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
      return str(path)
  return "An image"


class _FolderStream(Stream):
  """An image folder decoded at every epoch, in the order the in-memory path would use."""

  by_position = True

  def __init__(self, folder: image_folder.ImageFolder, files: _ImageFiles, seed: int):
    self._folder, self._files, self._seed = folder, files, seed

  def examples_at(self, epoch, positions: tf.Tensor) -> tf.data.Dataset:
    """(position, image, label) of the examples at `positions` of the epoch's order, each read
    from its file by its absolute path, which a tf.data service worker elsewhere reads too."""
    split = self._folder.train
    taken = tf.gather(epoch_order(len(split.labels), self._seed, epoch), positions)
    paths = np.array([os.path.abspath(path) for path in split.paths])
    return tf.data.Dataset.from_tensor_slices((
        positions, tf.gather(paths, taken), tf.gather(split.labels, taken))).map(
            lambda position, *record: (position, *self.decode(record)),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def epoch_batches(self, epoch, rows, first_step, num_steps):
    return self.examples_at(epoch, rows.positions(num_steps, first_step)).batch(
        rows.width, drop_remainder=True)

  def train_records(self, epoch: int) -> tf.data.Dataset:
    split = self._folder.train
    order = epoch_order(len(split.labels), self._seed, epoch)
    return tf.data.Dataset.from_tensor_slices((tf.gather(split.paths.astype(str), order),
                                               tf.gather(split.labels, order)))

  def decode(self, record):
    path, label = record
    return self._files.load(path), label

  def test_examples(self) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((
        self._folder.test.paths.astype(str), self._folder.test.labels)).map(
            lambda *record: self.decode(record), num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True)


def load_image_folder(data_dir: str, resize: Sequence[int], validation_split: Optional[float],
                      seed: int, limit_bytes: int) -> Loaded:
  """A folder of class subfolders (see trainer.data.image_folder), in memory or streamed."""
  folder = image_folder.read_image_folder(data_dir, resize, validation_split)
  image_shape = (*(tuple(resize) or folder.image_size), folder.channels)
  encoded = holds_encoded(folder.sizes, resize)
  files = _ImageFiles(image_shape, resize=bool(resize), encoded=encoded)
  num_train, num_test = len(folder.train.labels), len(folder.test.labels)
  name = "folder:" + os.path.basename(os.path.normpath(data_dir))
  encoded_bytes = sum(os.path.getsize(path) for split in (folder.train, folder.test)
                      for path in split.paths) if encoded else 0
  stream = _FolderStream(folder, files, seed)
  loaded = Loaded(name, image_shape, len(folder.class_names), num_train, num_test,
                  encoded=encoded, encoded_bytes=encoded_bytes, files=stream)
  if loaded.held_bytes > limit_bytes:
    return dataclasses.replace(loaded, stream=stream)
  return dataclasses.replace(
      loaded, train=Split(files.load_all(folder.train.paths), folder.train.labels),
      test=Split(files.load_all(folder.test.paths), folder.test.labels))


def epoch_order(num_examples: int, seed: int, epoch) -> tf.Tensor:
  """The order of an epoch's examples: a permutation seeded by (seed, epoch)."""
  return tf.random.experimental.stateless_shuffle(
      tf.range(num_examples), seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]))


def _epoch_seed(seed: int, epoch: int) -> int:
  """One integer seed per (seed, epoch) for a stream's file order and shuffle buffer."""
  return seed * 100_003 + epoch


# ---------------------------------------------------------------- TFRecord shards.
class _ShardStream(Stream):
  """TFRecord shards read at every epoch: the files in an order seeded by (seed, epoch), read in
  a parallel interleave, then a shuffle of STREAM_SHUFFLE_BUFFER encoded records with the same
  seed. Deterministic: the same epoch gives the same examples in the same order."""

  def __init__(self, shards: tfrecords.Shards, resize: bool, seed: int, encoded: bool = False):
    self._shards, self._resize, self._seed, self._encoded = shards, resize, seed, encoded

  def train_records(self, epoch: int) -> tf.data.Dataset:
    files = self._shards.train_files
    order = epoch_order(len(files), self._seed, epoch).numpy()
    return tfrecords.records([files[index] for index in order],
                             shuffle_buffer=STREAM_SHUFFLE_BUFFER,
                             shuffle_seed=_epoch_seed(self._seed, epoch))

  def records_by_file(self, first_epoch: int, first_position: int,
                      per_epoch: int) -> tf.data.Dataset:
    """(epoch, position, record) of every epoch from `first_position` of `first_epoch` on,
    without end, for a tf.data service: the records in each epoch's file order, numbered by
    their position in it and cut at `per_epoch` positions.

    The source is one element per file of each epoch (its order seeded by (seed, epoch), as the
    local stream's), which the service's distributed_epoch mode hands to one worker at a time:
    each file, so each record, of an epoch is read once. A worker interleaves the files it was
    handed (at most SERVED_SHARE_IN_FLIGHT of an epoch's open) and shuffles their records in
    windows of as large a share of an epoch: unlike a shuffle buffer, where a record may stay
    for epochs, each leaves with its window, so the epochs overlap only by what is in flight.
    Files before `first_position` are skipped unread, the first file's records before it
    undecoded.
    """
    files = tf.constant([os.path.abspath(path) for path in self._shards.train_files])
    counts = np.array(self._shards.train_counts, np.int64)
    num_files = len(counts)
    order = epoch_order(num_files, self._seed, first_epoch).numpy()
    first_slot = first_epoch * num_files + int(
        np.sum(np.cumsum(counts[order]) <= first_position))
    counts = tf.constant(counts)

    def slot(index):
      """The file at place `index` of the endless sequence of epochs, and which of its records
      (by index) are read: those from `first_position` on, below `per_epoch`."""
      epoch, place = index // num_files, index % num_files
      file_order = epoch_order(num_files, self._seed, epoch)
      ordered = tf.gather(counts, file_order)
      offset, count = tf.reduce_sum(ordered[:place]), ordered[place]
      skipped = tf.clip_by_value(tf.where(epoch == first_epoch, first_position - offset, 0),
                                 0, count)
      kept = tf.clip_by_value(per_epoch - offset, 0, count)
      return epoch, offset, files[file_order[place]], skipped, kept

    def file_records(epoch, offset, path, skipped, kept):
      return tf.data.TFRecordDataset(path).take(kept).enumerate().skip(skipped).map(
          lambda index, record: (epoch, offset + index, record))

    def shuffled(epochs, positions, records):
      order = tf.random.experimental.stateless_shuffle(
          tf.range(tf.shape(records)[0]),
          seed=preprocessing.example_seed(self._seed, epochs[0], positions[0]))
      return tuple(tf.gather(part, order) for part in (epochs, positions, records))

    open_files = max(1, int(num_files * SERVED_SHARE_IN_FLIGHT))
    window = max(1, int(per_epoch * SERVED_SHARE_IN_FLIGHT))
    return tf.data.Dataset.range(first_slot, tf.int64.max).map(slot).interleave(
        file_records, cycle_length=min(tfrecords.INTERLEAVE_FILES, open_files),
        num_parallel_calls=tf.data.AUTOTUNE).batch(
            min(STREAM_SHUFFLE_BUFFER, window)).map(shuffled).unbatch()

  def decode(self, record):
    return tfrecords.decode_record(record, self._shards, self._resize, self._encoded)

  def test_examples(self) -> tf.data.Dataset:
    return tfrecords.examples(self._shards.test_files, self._shards, self._resize,
                              parallel_files=1, encoded=self._encoded)


def load_tfrecords(data_dir: str, label_offset: int, resize: Sequence[int], seed: int,
                   limit_bytes: int, input_index: int = 0, num_inputs: int = 1) -> Loaded:
  """A folder of TFRecord shards (see trainer.data.tfrecords), in memory or streamed; under
  several processes, sharded by file when there are enough files."""
  shards = tfrecords.read_shards(data_dir, label_offset, resize, input_index, num_inputs)
  # Sharded by file, num_train counts every process's share as the smallest one, so the steps
  # per epoch (num_train // global batch) are the same on every process.
  num_train = (shards.examples_per_input * num_inputs if shards.sharding == "file"
               else sum(shards.train_counts))
  encoded = holds_encoded(shards.stored_sizes, resize)
  encoded_bytes = sum(os.path.getsize(path) for path in shards.train_files + shards.test_files
                      ) if encoded else 0
  stream = _ShardStream(shards, bool(resize), seed, encoded)
  loaded = Loaded("tfrecord:" + os.path.basename(os.path.normpath(data_dir)), shards.image_shape,
                  shards.num_classes, num_train, sum(shards.test_counts),
                  sharding=shards.sharding, recorded_normalization=shards.normalization,
                  encoded=encoded, encoded_bytes=encoded_bytes, files=stream)
  if loaded.held_bytes > limit_bytes:
    return dataclasses.replace(loaded, stream=stream)
  return dataclasses.replace(
      loaded, train=Split(*tfrecords.load_split(shards.train_files, shards.train_counts, shards,
                                                bool(resize), encoded)),
      test=Split(*tfrecords.load_split(shards.test_files, shards.test_counts, shards,
                                       bool(resize), encoded)))


# ---------------------------------------------------------------- tensorflow-datasets.
class _TfdsStream(Stream):
  """A tfds dataset read through tfds at every epoch: files shuffled by (seed, epoch), then a
  shuffle buffer of STREAM_SHUFFLE_BUFFER examples with the same seed. The images are read as
  their stored bytes and decoded in `decode`, after a worker has kept its own."""

  def __init__(self, builder, keys: Tuple[str, str], test_split: str, resize: Sequence[int],
               seed: int, image_shape: Tuple[int, int, int], encoded: bool = False):
    self._builder, self._keys, self._test_split = builder, keys, test_split
    self._resize, self._seed, self._encoded = resize, seed, encoded
    self._image_shape = image_shape

  def train_records(self, epoch: int) -> tf.data.Dataset:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    epoch_seed = _epoch_seed(self._seed, epoch)
    dataset = self._builder.as_dataset(
        split="train", shuffle_files=True, decoders=_decoders(self._keys, encoded=True),
        read_config=tfds.ReadConfig(shuffle_seed=epoch_seed, interleave_cycle_length=16))
    # The shuffle buffer holds encoded images: the same order as decoded ones, in less memory.
    return dataset.shuffle(STREAM_SHUFFLE_BUFFER, seed=epoch_seed).map(
        lambda example: (example[self._keys[0]], tf.cast(example[self._keys[1]], tf.int32)))

  def decode(self, record):
    image_bytes, label = record
    if self._encoded:
      return image_bytes, label
    return preprocessing.decode(image_bytes, self._image_shape, bool(self._resize)), label

  def test_examples(self) -> tf.data.Dataset:
    return self._builder.as_dataset(
        split=self._test_split, decoders=_decoders(self._keys, self._encoded)).map(
            lambda example: _example(example, self._keys, () if self._encoded else self._resize),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _example(example: dict, keys: Tuple[str, str], resize: Sequence[int]):
  """(uint8 image, int32 label) of one tfds example, resized when `resize` is given; or the
  image's encoded bytes when read with _decoders(keys, encoded=True)."""
  image, label = example[keys[0]], tf.cast(example[keys[1]], tf.int32)
  return (preprocessing.resize_uint8(image, resize) if resize else image), label


def _decoders(keys: Tuple[str, str], encoded: bool):
  """tfds's decoders: the image feature left as its stored bytes when `encoded`."""
  if not encoded:
    return None
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return {keys[0]: tfds.decode.SkipDecoding()}


def _ensure_reachable(url: str, dataset: str) -> None:
  """Fails within seconds when the dataset's download host is unreachable.

  tfds itself retries a failed download with back-off for minutes before giving up.
  """
  parsed = urllib.parse.urlparse(url)
  port = parsed.port or (443 if parsed.scheme == "https" else 80)
  try:
    socket.create_connection((parsed.hostname, port), timeout=_NETWORK_PROBE_SECONDS).close()
  except OSError as e:
    raise errors.UserError(
        f"--dataset={dataset} is not in the tfds cache and its download host {parsed.hostname} "
        f"cannot be reached ({e}). Offline, use one of:\n"
        "  --tfds_data_dir=DIR   a tfds data folder where the dataset is prepared\n"
        "  --data_dir=DIR   a folder with the four MNIST-format IDX files, or one subfolder of "
        "images per class\n"
        "  --dataset=fashion_mnist --data_dir=/usr/share/datasets/fashion-mnist"
        "   (apt-get install dataset-fashion-mnist)\n"
        "  --dataset=synthetic   random images") from None


def _tfds_builder(name: str, tfds_data_dir: Optional[str]):
  # Imported here: tfds takes seconds to import and only this path needs it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=tfds_data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.UserError(
        f"--dataset={name} is not a tensorflow-datasets dataset (nor prepared in "
        f"{tfds_data_dir or 'the tfds cache'}). Its image classification datasets are listed at "
        "https://www.tensorflow.org/datasets/catalog/overview; a folder of images takes "
        "--data_dir instead.") from None
  if not builder.is_prepared():
    _ensure_reachable(getattr(builder, "URL", "https://storage.googleapis.com"), name)
    builder.download_and_prepare()
  return builder


def _tfds_features(builder, name: str) -> Tuple[str, str]:
  """The (image, label) feature keys of an image classification dataset: its supervised keys,
  or else its one Image and one ClassLabel feature."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = builder.info.features
  keys = builder.info.supervised_keys
  if not keys or len(keys) != 2:
    images = [key for key, feature in features.items()
              if isinstance(feature, tfds.features.Image)]
    labels = [key for key, feature in features.items()
              if isinstance(feature, tfds.features.ClassLabel)]
    keys = (images[0], labels[0]) if len(images) == len(labels) == 1 else None
  if (not keys or len(features[keys[0]].shape) != 3
      or not hasattr(features[keys[1]], "num_classes")):
    raise errors.UserError(
        f"--dataset={name} is not an image classification dataset: it has no (image, label) "
        "pair of features. Choose one whose catalog page lists supervised keys (image, label).")
  return tuple(keys)


def load_tfds(name: str, tfds_data_dir: Optional[str], resize: Sequence[int], seed: int,
              limit_bytes: int) -> Loaded:
  """A tfds image classification dataset, downloaded and prepared if it is not yet."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = _tfds_builder(name, tfds_data_dir)
  keys = _tfds_features(builder, name)
  image_key, label_key = keys
  test_split = next((split for split in ("test", "validation") if split in builder.info.splits),
                    None)
  if "train" not in builder.info.splits or test_split is None:
    raise errors.UserError(f"--dataset={name} has splits {', '.join(builder.info.splits)}; the "
                           "harness trains on train and tests on test (or validation).")
  stored_shape = builder.info.features[image_key].shape
  if None in stored_shape[:2] and not resize:
    raise errors.UserError(f"--dataset={name} has images of varying size. Add "
                           "--image_size=HEIGHT,WIDTH to resize them all.")
  image_shape = (*(tuple(resize) or stored_shape[:2]), stored_shape[2])
  num_train = builder.info.splits["train"].num_examples
  num_test = builder.info.splits[test_split].num_examples
  # A stored size of None varies from image to image.
  encoded = holds_encoded([stored_shape[:2]], resize)
  encoded_bytes = sum(builder.info.splits[split].num_bytes or 0
                      for split in ("train", test_split)) if encoded else 0
  loaded = Loaded(name, image_shape, builder.info.features[label_key].num_classes, num_train,
                  num_test, encoded=encoded, encoded_bytes=encoded_bytes)
  if loaded.held_bytes > limit_bytes:
    return dataclasses.replace(loaded, stream=_TfdsStream(builder, keys, test_split, resize,
                                                          seed, image_shape, encoded))
  splits = []
  for split in ("train", test_split):
    dataset = builder.as_dataset(split=split, decoders=_decoders(keys, encoded)).map(
        lambda example: _example(example, keys, () if encoded else resize))
    images, labels = zip(*tfds.as_numpy(dataset.batch(_DECODE_BATCH * 8)))
    splits.append(Split(np.concatenate(images), np.concatenate(labels)))
  return dataclasses.replace(loaded, train=splits[0], test=splits[1])
