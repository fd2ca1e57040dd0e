"""TFRecord shards of tf.train.Example, the format of ImageNet training in TensorFlow: reading
them, and writing them (`convert`, which `python -m trainer.tfrecords` runs).

A folder holding `train-*` and `validation-*` (or `test-*`) files is read as such shards, with
the keys Model Garden's tf_example_decoder and the ImageNet converters use: `image/encoded`
(JPEG or PNG bytes) and `image/class/label` (an int64). `--label_offset` is subtracted from
every label (1 for the ImageNet converters, whose labels start at 1, 0 being background).

Before training every file is checked: its record framing end to end (a truncated file, or one
that is not TFRecord, is named), and its first record (the keys, a decodable image, a label in
range). The class count comes from the folder's dataset.json (written by `trainer.tfrecords`),
or else from a scan of every training label. Held in memory, every image and label is checked
while decoding; streamed, a later record that is damaged stops the run where the reader meets it.
"""

import dataclasses
import glob
import json
import os
import struct
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer.data import idx_files
from trainer.data import image_folder
from trainer.data import preprocessing
from trainer import errors
from trainer import safe_files

IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
TRAIN_PATTERN = "train-*"
TEST_PATTERNS = ("validation-*", "test-*")
METADATA_FILE = "dataset.json"  # Class names and counts, written by trainer.tfrecords.
INTERLEAVE_FILES = 16  # Files read at once by the parallel interleave.
_FEATURES = {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
             LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}


def is_tfrecord_folder(data_dir: str) -> bool:
  """True when `data_dir` holds train-* files and validation-* or test-* files."""
  return bool(_files(data_dir, TRAIN_PATTERN)) and any(
      _files(data_dir, pattern) for pattern in TEST_PATTERNS)


def _files(data_dir: str, pattern: str) -> List[str]:
  return sorted(path for path in glob.glob(os.path.join(data_dir, pattern))
                if os.path.isfile(path))


@dataclasses.dataclass(frozen=True)
class Shards:
  """The checked files of one folder: both splits, their record counts, shapes and classes."""

  train_files: Tuple[str, ...]  # Those this process reads: its own, when sharded by file.
  test_files: Tuple[str, ...]
  train_counts: Tuple[int, ...]
  test_counts: Tuple[int, ...]
  image_shape: Tuple[int, int, int]
  num_classes: int
  label_offset: int
  # "file": each process reads only its own training files; "data": every process reads all
  # and keeps its slice of each batch; "none": one process.
  sharding: str = "none"
  # Training examples per process when sharded by file: the fewest any process holds, so every
  # process runs the same number of steps per epoch.
  examples_per_input: int = 0
  # Per-channel (mean, std) of the training images on the [0, 1] scale, from dataset.json.
  normalization: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]] = None
  # The (height, width) of each file's first image: whether images are stored at the size
  # trained on, as far as checking reads.
  stored_sizes: frozenset = frozenset()


def count_records(path: str) -> int:
  """The number of records in the TFRecord file `path`, from its framing alone (each record is a
  uint64 length, its CRC, the data and the data's CRC); a truncated file is named."""
  size = os.path.getsize(path)
  count, offset = 0, 0
  with open(path, "rb") as file:
    while offset < size:
      header = file.read(12)
      if len(header) < 12:
        raise _truncated(path, count)
      (length,) = struct.unpack("<Q", header[:8])
      offset += 12 + length + 4
      if offset > size:
        raise _truncated(path, count)
      file.seek(offset)
      count += 1
  return count


def _truncated(path: str, count: int) -> errors.UserError:
  return errors.UserError(
      f"{path} is truncated or damaged after {count} complete records (its last record runs past "
      "the end of the file). Copy it again, or convert its images again with trainer.tfrecords.")


def _first_record(path: str) -> bytes:
  try:
    for record in tf.data.TFRecordDataset(path).take(1):
      return record.numpy()
  except tf.errors.DataLossError:
    pass
  raise errors.UserError(f"{path} is not a TFRecord file (its first record fails its checksum). "
                         "Remove it from the folder, or write it with trainer.tfrecords.")


def parse_example(record: tf.Tensor, label_offset: int) -> Tuple[tf.Tensor, tf.Tensor]:
  """(encoded image bytes, int32 label less the offset) of one serialized tf.train.Example."""
  features = tf.io.parse_single_example(record, _FEATURES)
  return features[IMAGE_KEY], tf.cast(features[LABEL_KEY], tf.int32) - label_offset


def _check_first_record(path: str, label_offset: int) -> Tuple[Tuple[int, int, int], int]:
  """The first record's image shape and label; a missing key or a bad image is named."""
  record = _first_record(path)
  try:
    image_bytes, label = parse_example(tf.constant(record), label_offset)
  except tf.errors.InvalidArgumentError as e:
    raise errors.UserError(
        f"{path} holds tf.train.Examples without the features {IMAGE_KEY} (bytes) and "
        f"{LABEL_KEY} (int64) ({errors.tensorflow_cause(e)}). Write the shards with those keys, "
        "as trainer.tfrecords and the ImageNet converters do.") from None
  try:
    image = tf.io.decode_image(image_bytes, expand_animations=False)
  except tf.errors.InvalidArgumentError:
    raise errors.UserError(f"{path}: the {IMAGE_KEY} of its first record is not a JPEG or PNG "
                           "image.") from None
  return tuple(int(size) for size in image.shape), int(label)


def read_shards(data_dir: str, label_offset: int, resize: Sequence[int], input_index: int = 0,
                num_inputs: int = 1) -> Shards:
  """Finds and checks the shards of `data_dir` (see the module docstring) for process
  `input_index` of the `num_inputs` that read training data.

  With at least as many training files as processes, each process reads only its own files
  (every num_inputs-th, from its index): sharding by file, which Model Garden and tf.distribute
  prefer because no process reads what another trains on. With fewer files, every process reads
  them all and keeps its slice of each global batch (sharding by data).
  """
  all_train_files = _files(data_dir, TRAIN_PATTERN)
  test_files = next(files for files in (_files(data_dir, pattern) for pattern in TEST_PATTERNS)
                    if files)
  metadata = _metadata(data_dir)
  sharding = "none" if num_inputs == 1 else (
      "file" if len(all_train_files) >= num_inputs else "data")
  train_files = (all_train_files[input_index::num_inputs] if sharding == "file"
                 else all_train_files)
  shapes, first_labels = {}, {}
  for path in train_files + test_files:
    shapes[path], first_labels[path] = _check_first_record(path, label_offset)
  counts = {path: count_records(path) for path in train_files + test_files}
  examples_per_input = 0
  if sharding == "file":
    # The other processes' files: their counts as the converter recorded them (or their
    # framing), so each process knows the smallest share without reading others' records.
    recorded = metadata.get("files", {})
    others = {path: recorded.get(os.path.basename(path)) or count_records(path)
              for path in all_train_files if path not in counts}
    every = {**others, **counts}
    examples_per_input = min(sum(every[path] for path in all_train_files[index::num_inputs])
                             for index in range(num_inputs))
  channels = {shape[2] for shape in shapes.values()}
  sizes = {shape[:2] for shape in shapes.values()}
  if len(channels) > 1:
    raise errors.UserError(f"The shards in {data_dir} mix images with {sorted(channels)} "
                           "channels; convert them to one.")
  if len(sizes) > 1 and not resize:
    raise errors.UserError(f"The shards in {data_dir} hold images of several sizes "
                           f"({', '.join(f'{h}x{w}' for h, w in sorted(sizes))}, ...). Add "
                           "--image_size=HEIGHT,WIDTH to resize them all.")
  image_shape = (*(tuple(resize) or next(iter(sizes))), channels.pop())
  num_classes = _num_classes(data_dir, metadata, all_train_files, label_offset)
  for path, label in first_labels.items():
    _check_label(label, num_classes, label_offset, path)
  return Shards(tuple(train_files), tuple(test_files),
                tuple(counts[path] for path in train_files),
                tuple(counts[path] for path in test_files), image_shape, num_classes,
                label_offset, sharding, examples_per_input,
                (tuple(metadata["mean"]), tuple(metadata["std"]))
                if "mean" in metadata and "std" in metadata else None, frozenset(sizes))


def _metadata(data_dir: str) -> dict:
  path = os.path.join(data_dir, METADATA_FILE)
  if not os.path.isfile(path):
    return {}
  try:
    with open(path) as file:
      return json.load(file)
  except (OSError, ValueError) as e:
    raise errors.UserError(f"{path} cannot be read as JSON ({e}). Remove it: the shards are "
                           "then counted and their labels scanned instead.") from None


def _num_classes(data_dir: str, metadata: dict, train_files: Sequence[str],
                 label_offset: int) -> int:
  if "num_classes" in metadata:
    return int(metadata["num_classes"])
  # Without the converter's record, the training labels say it: one pass over the labels only.
  dataset = tf.data.TFRecordDataset(list(train_files), num_parallel_reads=INTERLEAVE_FILES).map(
      lambda record: tf.io.parse_single_example(record, {LABEL_KEY: _FEATURES[LABEL_KEY]})[
          LABEL_KEY], num_parallel_calls=tf.data.AUTOTUNE)
  labels = np.concatenate([batch.numpy() for batch in dataset.batch(65_536)])
  lowest = int(labels.min()) - label_offset
  if lowest < 0:
    raise errors.UserError(
        f"The shards in {data_dir} hold label {lowest + label_offset}, below --label_offset="
        f"{label_offset}. Labels must start at the offset (0, or 1 for the ImageNet converters).")
  return int(labels.max()) - label_offset + 1


def _check_label(label: int, num_classes: int, label_offset: int, path: str) -> None:
  if not 0 <= label < num_classes:
    raise errors.UserError(
        f"{path} holds label {label + label_offset}, outside the {num_classes} classes "
        f"({label_offset} to {num_classes - 1 + label_offset}"
        + (" with --label_offset" if label_offset else "") + "). Fix the label, or set "
        "--label_offset=1 for shards whose labels start at 1.")


def records(files: Sequence[str], parallel_files: int = INTERLEAVE_FILES,
            shuffle_buffer: int = 0, shuffle_seed: int = 0) -> tf.data.Dataset:
  """The serialized records of `files`: a parallel interleave over the files (one record of
  each in turn; with `parallel_files` 1, file order then record order), then an optional seeded
  shuffle of the records (encoded: smaller than decoded images). The same arguments give the
  same order: tf.data keeps it with deterministic=True."""
  files_dataset = tf.data.Dataset.from_tensor_slices(list(files))
  if parallel_files > 1:
    serialized = files_dataset.interleave(
        tf.data.TFRecordDataset, cycle_length=min(parallel_files, len(files)), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    serialized = files_dataset.flat_map(tf.data.TFRecordDataset)
  if shuffle_buffer:
    serialized = serialized.shuffle(shuffle_buffer, seed=shuffle_seed)
  return serialized


def decode_record(record: tf.Tensor, shards: Shards, resize: bool,
                  encoded: bool = False) -> Tuple[tf.Tensor, tf.Tensor]:
  """(uint8 image, label) of one record; with `encoded`, the image's JPEG or PNG bytes."""
  image_bytes, label = parse_example(record, shards.label_offset)
  if encoded:
    return image_bytes, label
  return preprocessing.decode(image_bytes, shards.image_shape, resize), label


def examples(files: Sequence[str], shards: Shards, resize: bool,
             parallel_files: int = INTERLEAVE_FILES, shuffle_buffer: int = 0,
             shuffle_seed: int = 0, encoded: bool = False) -> tf.data.Dataset:
  """Decoded (uint8 image, label) of `files`' `records`, in their order, decoded in parallel.
  With `encoded` the images stay JPEG or PNG bytes, for a per-example transform of the
  original."""
  return records(files, parallel_files, shuffle_buffer, shuffle_seed).map(
      lambda record: decode_record(record, shards, resize, encoded),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def load_split(files: Sequence[str], counts: Sequence[int], shards: Shards,
               resize: bool, encoded: bool = False) -> Tuple[np.ndarray, np.ndarray]:
  """Every image and label of `files` in memory, in file order (as the converter wrote them);
  a damaged record or an out-of-range label is named with its file. With `encoded` the images
  are their JPEG or PNG bytes (an object array)."""
  try:
    batches = [batch for batch in examples(files, shards, resize, parallel_files=1,
                                           encoded=encoded).batch(4096)]
  except tf.errors.OpError as e:
    raise errors.UserError(f"A record of {', '.join(files[:2])}{', ...' if len(files) > 2 else ''}"
                           f" cannot be read or decoded ({errors.tensorflow_cause(e)}). Find the "
                           "file by converting or copying each again.") from None
  images = np.concatenate([batch[0].numpy() for batch in batches])
  labels = np.concatenate([batch[1].numpy() for batch in batches])
  bad = np.flatnonzero((labels < 0) | (labels >= shards.num_classes))
  if bad.size:
    file_index = int(np.searchsorted(np.cumsum(counts), bad[0], side="right"))
    _check_label(int(labels[bad[0]]), shards.num_classes, shards.label_offset, files[file_index])
  return images, labels


# ---------------------------------------------------------------- Writing (trainer.tfrecords).
def _example(image_bytes: bytes, label: int) -> bytes:
  """One serialized tf.train.Example with the two keys this module reads."""
  return tf.train.Example(features=tf.train.Features(feature={
      IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
      LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
  })).SerializeToString()


def write_split(output: str, split: str, encoded_images, labels, num_shards: int) -> dict:
  """Writes one split as `num_shards` files of contiguous runs; returns {file name: records}."""
  bounds = np.linspace(0, len(labels), num_shards + 1).astype(int)
  counts = {}
  for shard in range(num_shards):
    name = f"{split}-{shard:05d}-of-{num_shards:05d}"
    path = os.path.join(output, name)
    with safe_files.writing(f"the shard {path}", path, partial=[path + ".tmp"]):
      with tf.io.TFRecordWriter(path + ".tmp") as writer:
        for index in range(bounds[shard], bounds[shard + 1]):
          writer.write(_example(encoded_images(index), labels[index]))
      os.replace(path + ".tmp", path)
    counts[name] = int(bounds[shard + 1] - bounds[shard])
  return counts


def convert(data_dir: str, output: str, num_shards: int, validation_split=None) -> dict:
  """Writes the dataset in `data_dir` as shards in `output`; returns what dataset.json holds."""
  data_dir = os.path.expanduser(data_dir)
  if not os.path.isdir(data_dir):
    raise errors.UserError(f"--data_dir={data_dir} is not a folder.")
  if os.path.isdir(output) and (is_tfrecord_folder(output) or os.listdir(output)):
    raise errors.UserError(f"--output={output} is not empty; give a new folder, so that no "
                           "shards of another dataset mix with these.")
  os.makedirs(output, exist_ok=True)
  if image_folder.is_image_folder(data_dir):
    folder = image_folder.read_image_folder(data_dir, (), validation_split, mixed_sizes=True)
    class_names = list(folder.class_names)
    mean = std = None  # The images are copied as they are, never decoded here.
    splits = {"train": folder.train, "test": folder.test}
    sources = {name: ((lambda index, paths=split.paths: open(paths[index], "rb").read()),
                      split.labels) for name, split in splits.items()}
  else:
    train_images, train_labels, test_images, test_labels = idx_files.read_mnist_format(data_dir)
    class_names = [str(label) for label in range(idx_files.NUM_CLASSES)]

    mean, std = preprocessing.channel_statistics(train_images)

    def png(images):
      return lambda index: tf.io.encode_png(images[index][..., None]
                                            if images.ndim == 3 else images[index]).numpy()
    sources = {"train": (png(train_images), train_labels), "test": (png(test_images), test_labels)}
  num_train, num_test = len(sources["train"][1]), len(sources["test"][1])
  test_shards = max(1, round(num_shards * num_test / num_train))
  files = {**write_split(output, "train", *sources["train"], num_shards),
           **write_split(output, "test", *sources["test"], test_shards)}
  metadata = {"source": os.path.abspath(data_dir), "num_classes": len(class_names),
              "class_names": class_names, "files": files}
  if mean is not None:
    # What --normalize standardises with, so that every worker of a cluster uses the same.
    metadata.update(mean=list(mean), std=list(std))
  safe_files.write_json(os.path.join(output, METADATA_FILE), metadata)
  return metadata
