"""The image shape and class count a run's data has, read from its headers and metadata alone.

A device plan is made before any framework starts its devices (trainer.distribute.device_plan),
and `python -m trainer.plan` makes one for a machine you are not on: neither may load the
training data, and neither may run a TensorFlow op (which would start TensorFlow's devices). So
each format is read as little as says its shape: an IDX file's header, the first image header of
an image folder, the first record of a TFRecord shard (parsed as a protocol buffer), a tfds
dataset's feature description; synthetic data's flags. --image_size resizes all of them.
"""

import gzip
import os
import struct
from typing import Optional, Sequence, Tuple

from trainer import config as config_lib
from trainer import errors
from trainer.data import idx_files
from trainer.data import image_folder
from trainer.data import tfrecords

SYNTHETIC_IMAGE_SHAPE = (*idx_files.IMAGE_SHAPE, 1)
# TFRecord shards without the converter's dataset.json: their class count would take a scan of
# every label. It sizes only the last layer's weights in a plan.
UNRECORDED_CLASSES = 1000


def image_shape_and_classes(data: config_lib.DataConfig) -> Tuple[Tuple[int, int, int], int]:
  """(image shape, number of classes) of the data `data` names, as the run will train on it."""
  if data.dataset == "synthetic":
    return (tuple(data.image_shape) or SYNTHETIC_IMAGE_SHAPE,
            data.num_classes or idx_files.NUM_CLASSES)
  if data.data_dir:
    data_dir = os.path.expanduser(data.data_dir)
    if not os.path.isdir(data_dir):
      raise errors.UserError(f"--data_dir={data.data_dir} is not a folder.")
    if tfrecords.is_tfrecord_folder(data_dir):
      return _tfrecords(data_dir, data.image_size)
    if image_folder.is_image_folder(data_dir):
      return _image_folder(data_dir, data.image_size)
    return _idx(data_dir, data.image_size), idx_files.NUM_CLASSES
  return _tfds(data.dataset or "mnist", data.tfds_data_dir, data.image_size)


def _resized(size: Sequence[int], channels: int,
             resize: Sequence[int]) -> Tuple[int, int, int]:
  return (*(tuple(resize) or tuple(size)), channels)


def _idx(data_dir: str, resize: Sequence[int]) -> Tuple[int, int, int]:
  path = idx_files._find(data_dir, idx_files.TRAIN_IMAGES)  # pylint: disable=protected-access
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      header = f.read(16)
  except (OSError, EOFError) as e:
    raise errors.UserError(f"{path} cannot be read ({e}); it is corrupt or truncated. Fetch the "
                           "file again.") from None
  if len(header) < 16 or int.from_bytes(header[:4], "big") != idx_files.IMAGE_MAGIC:
    raise errors.UserError(f"{path} is not an IDX file of images (its magic number is not "
                           f"{idx_files.IMAGE_MAGIC:08x}). Check that the file is the one its "
                           "name says.")
  height, width = struct.unpack(">II", header[8:16])
  return _resized((height, width), 1, resize)


def _image_folder(data_dir: str, resize: Sequence[int]) -> Tuple[Tuple[int, int, int], int]:
  root = os.path.join(data_dir, "train")
  root = root if os.path.isdir(root) else data_dir
  class_names, files = image_folder._list_classes(root)  # pylint: disable=protected-access
  first = min(path for name in class_names for path in files[name][:1])
  size, channels = image_folder.image_header(first)
  return _resized(size, _decoded_channels(channels), resize), len(class_names)


def _tfrecords(data_dir: str, resize: Sequence[int]) -> Tuple[Tuple[int, int, int], int]:
  # The test split's first shard: every worker reads it, where the training shards are split
  # among the workers, each opening only its own.
  find = tfrecords._files  # pylint: disable=protected-access
  path = next(files for files in (find(data_dir, pattern) for pattern in tfrecords.TEST_PATTERNS)
              if files)[0]
  size, channels = _header_of(_first_image(path), path)
  recorded = tfrecords._metadata(data_dir).get("num_classes")  # pylint: disable=protected-access
  return (_resized(size, _decoded_channels(channels), resize),
          int(recorded) if recorded else UNRECORDED_CLASSES)


def _first_image(path: str) -> bytes:
  """The image bytes of the first record of a TFRecord file, read by its framing (length,
  its checksum, the record) and parsed as a tf.train.Example: no TensorFlow op runs."""
  from tensorflow.core.example import example_pb2  # pylint: disable=g-import-not-at-top
  try:
    with open(path, "rb") as f:
      (length,) = struct.unpack("<Q", f.read(8))
      f.read(4)
      record = f.read(length)
    example = example_pb2.Example.FromString(record)
    return example.features.feature[tfrecords.IMAGE_KEY].bytes_list.value[0]
  except (OSError, struct.error, IndexError, ValueError) as e:
    raise errors.UserError(f"{path}: its first record is not a tf.train.Example with "
                           f"{tfrecords.IMAGE_KEY} ({type(e).__name__}). Write the shards with "
                           "trainer.tfrecords.") from None


def _header_of(head: bytes, where: str) -> Tuple[Tuple[int, int], int]:
  """((height, width), channels) of PNG or JPEG bytes, as image_folder.image_header reads a
  file's."""
  # pylint: disable=protected-access
  if head.startswith(image_folder._PNG_SIGNATURE) and len(head) >= 26 and head[12:16] == b"IHDR":
    width, height = struct.unpack(">II", head[16:24])
    return (height, width), image_folder._PNG_CHANNELS.get(head[25], 3)
  frame = image_folder._jpeg_frame(head) if head.startswith(b"\xff\xd8") else None
  if frame is None:
    raise errors.UserError(f"{where}: the {tfrecords.IMAGE_KEY} of its first record is not a "
                           "JPEG or PNG image.")
  return frame


def _decoded_channels(stored: int) -> int:
  # As the pipeline decodes: grey with alpha to grey, colour with alpha to colour.
  return min(stored, 3) if stored != 2 else 1


def _tfds(name: str, tfds_data_dir: Optional[str],
          resize: Sequence[int]) -> Tuple[Tuple[int, int, int], int]:
  """From the dataset's feature description, which tfds knows without downloading it."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from trainer.data import sources  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=tfds_data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.UserError(f"--dataset={name} is not a tensorflow-datasets dataset.") from None
  image_key, label_key = sources._tfds_features(builder, name)  # pylint: disable=protected-access
  stored = builder.info.features[image_key].shape
  if None in stored[:2] and not resize:
    raise errors.UserError(f"--dataset={name} has images of varying size. Add "
                           "--image_size=HEIGHT,WIDTH to resize them all.")
  return (_resized(stored[:2], stored[2], resize),
          builder.info.features[label_key].num_classes)
