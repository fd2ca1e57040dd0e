"""Writes an image folder or MNIST-format IDX files as TFRecord shards that --data_dir reads.

  python -m trainer.tfrecords --data_dir=/usr/share/datasets/fashion-mnist --output=shards \\
      --shards=8
  python -m trainer.main --model=resnet18 --data_dir=shards

Each split becomes files `train-00000-of-00008`, ... and `test-00000-of-00002`, ... of
tf.train.Example records with `image/encoded` (the folder's own JPEG or PNG bytes; IDX images
encoded as PNG, which is lossless) and `image/class/label`, in the source's order, split into
contiguous runs: read back in file order they are the same examples in the same order as the
source, so both train to the same weights. dataset.json beside them records the class names
and counts. Every file is written under a temporary name and renamed when complete.
"""

import os

from absl import flags

from trainer import command

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "An image folder (one subfolder per class) or a folder of "
                    "the four MNIST-format IDX files.", required=True)
flags.DEFINE_string("output", None, "Folder to write the shards into (created; must hold no "
                    "shards yet).", required=True)
flags.DEFINE_integer("shards", 8, "Training files to write; the test split gets a share of "
                     "files in proportion to its size (at least one).", lower_bound=1)
flags.DEFINE_float("validation_split", None, "An image folder without test/: the share held out "
                   "as the test split (default 0.2, as trainer.main holds out).")


def main(argv):
  del argv  # Unused.
  from trainer import console  # pylint: disable=g-import-not-at-top
  console.quiet()
  from trainer import errors  # pylint: disable=g-import-not-at-top
  with errors.shown_as_one_line():
    from trainer.data import tfrecords  # pylint: disable=g-import-not-at-top
    metadata = tfrecords.convert(FLAGS.data_dir, FLAGS.output, FLAGS.shards,
                                 FLAGS.validation_split)
  for split in ("train", "test"):
    counts = [count for name, count in metadata["files"].items() if name.startswith(split)]
    print(f"{FLAGS.output}: {split}, {errors.plural(sum(counts), 'example')} in "
          f"{errors.plural(len(counts), 'file')}")
  print(f"{FLAGS.output}: {metadata['num_classes']} classes; train with "
        f"python -m trainer.main --data_dir={FLAGS.output}")


if __name__ == "__main__":
  command.run(main)
