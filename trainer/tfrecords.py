"""Writes an image folder or MNIST-format IDX files as TFRecord shards that --data_dir reads.

  python -m trainer.tfrecords --data_dir=/usr/share/datasets/fashion-mnist --output=shards --shards=8
  python -m trainer.main --model=resnet18 --data_dir=shards

Each split becomes files `train-00000-of-00008`, ... and `test-00000-of-00002`, ... of
tf.train.Example records with `image/encoded` (the folder's own JPEG or PNG bytes; IDX images
encoded as PNG, which is lossless) and `image/class/label`, in the source's order, split into
contiguous runs: read back in file order they are the same examples in the same order as the
source, so both train to the same weights. dataset.json beside them records the class names
and counts. Every file is written under a temporary name and renamed when complete.
"""

import os

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "An image folder (one subfolder per class) or a folder of "
                    "the four MNIST-format IDX files.", required=True)
flags.DEFINE_string("output", None, "Folder to write the shards into (created; must hold no "
                    "shards yet).", required=True)
flags.DEFINE_integer("shards", 8, "Training files to write; the test split gets a share of "
                     "files in proportion to its size (at least one).", lower_bound=1)
flags.DEFINE_float("validation_split", None, "An image folder without test/: the share held out "
                   "as the test split (default 0.2, as trainer.main holds out).")


def _example(image_bytes: bytes, label: int):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.train.Example(features=tf.train.Features(feature={
      "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
      "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
  })).SerializeToString()


def write_split(output: str, split: str, encoded_images, labels, num_shards: int) -> dict:
  """Writes one split as `num_shards` files of contiguous runs; returns {file name: records}."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.records import workdir  # pylint: disable=g-import-not-at-top
  bounds = np.linspace(0, len(labels), num_shards + 1).astype(int)
  counts = {}
  for shard in range(num_shards):
    name = f"{split}-{shard:05d}-of-{num_shards:05d}"
    path = os.path.join(output, name)
    with workdir.writing(f"the shard {path}", path, partial=[path + ".tmp"]):
      with tf.io.TFRecordWriter(path + ".tmp") as writer:
        for index in range(bounds[shard], bounds[shard + 1]):
          writer.write(_example(encoded_images(index), labels[index]))
      os.replace(path + ".tmp", path)
    counts[name] = int(bounds[shard + 1] - bounds[shard])
  return counts


def convert(data_dir: str, output: str, num_shards: int, validation_split=None) -> dict:
  """Writes the dataset in `data_dir` as shards in `output`; returns what dataset.json holds."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.data import idx_files  # pylint: disable=g-import-not-at-top
  from trainer.data import image_folder  # pylint: disable=g-import-not-at-top
  from trainer.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from trainer.data import tfrecords  # pylint: disable=g-import-not-at-top
  from trainer import errors  # pylint: disable=g-import-not-at-top
  from trainer.records import workdir  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(data_dir)
  if not os.path.isdir(data_dir):
    raise errors.UserError(f"--data_dir={data_dir} is not a folder.")
  if os.path.isdir(output) and (tfrecords.is_tfrecord_folder(output) or os.listdir(output)):
    raise errors.UserError(f"--output={output} is not empty; give a new folder, so that no "
                           "shards of another dataset mix with these.")
  os.makedirs(output, exist_ok=True)
  if image_folder.is_image_folder(data_dir):
    folder = image_folder.read_image_folder(data_dir, (), validation_split)
    class_names = list(folder.class_names)
    mean = std = None  # The images are copied as they are, never decoded here.
    splits = {"train": folder.train, "test": folder.test}
    sources = {name: ((lambda index, paths=split.paths: open(paths[index], "rb").read()),
                      split.labels) for name, split in splits.items()}
  else:
    train_images, train_labels, test_images, test_labels = idx_files.read_mnist_format(data_dir)
    class_names = [str(label) for label in range(idx_files.NUM_CLASSES)]

    mean, std = input_pipeline.channel_statistics(train_images)

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
  workdir.write_json(os.path.join(output, tfrecords.METADATA_FILE), metadata)
  return metadata


def main(argv):
  del argv  # Unused.
  from trainer import console  # pylint: disable=g-import-not-at-top
  console.quiet()
  from trainer import errors  # pylint: disable=g-import-not-at-top
  with errors.shown_as_one_line():
    metadata = convert(FLAGS.data_dir, FLAGS.output, FLAGS.shards, FLAGS.validation_split)
  for split in ("train", "test"):
    counts = [count for name, count in metadata["files"].items() if name.startswith(split)]
    print(f"{FLAGS.output}: {split}, {sum(counts)} examples in {len(counts)} files")
  print(f"{FLAGS.output}: {metadata['num_classes']} classes; train with "
        f"python -m trainer.main --data_dir={FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
