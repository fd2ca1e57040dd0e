"""The input benchmark: ImageNet-like JPEGs, and its rows on a few of them."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from trainer.bench import input_benchmark
from trainer.data import tfrecords


def test_imagenet_like_images_are_300_to_500_px_with_jpegs_of_photo_size():
  rng = np.random.default_rng(0)
  images = [input_benchmark.imagenet_like_image(rng) for _ in range(4)]
  for image in images:
    assert 300 <= image.shape[0] <= 500 and 300 <= image.shape[1] <= 500
    size = len(tf.io.encode_jpeg(image, quality=input_benchmark.JPEG_QUALITY).numpy())
    # A photo of this size is tens of KB at quality 90: neither noise (hundreds) nor flat (a few).
    assert 20_000 < size < 200_000
  assert len({image.shape for image in images}) > 1


@pytest.mark.slow
def test_the_rows_are_measured_on_shards_and_reported(tmp_path):
  data_dir = str(tmp_path / "jpegs")
  input_benchmark.write_jpeg_shards(data_dir, 40, num_shards=2)
  assert tfrecords.is_tfrecord_folder(data_dir)
  assert len(glob.glob(os.path.join(data_dir, "train-*"))) == 2
  record = input_benchmark.run_input_benchmark(data_dir, (96, 96), num_batches=2, rounds=1,
                                               model="", root=str(tmp_path), batch_size=8)
  rows = record["rows"]
  assert set(rows) == {"harness", "harness_streamed", "reference"}
  assert rows["harness"]["held"] == "encoded, in memory"
  assert rows["harness_streamed"]["held"] == "encoded, streamed"
  assert all(row["images_per_sec"] > 0 for row in rows.values())
  # What the process obtained of the cores, and its images per CPU second: comparable across
  # processes on a machine shared with other work, where images/s alone is not.
  assert all(0 < row["cores_obtained"] <= record["cores"] + 0.5 for row in rows.values())
  assert all(row["per_cpu_second"] == pytest.approx(
      row["images_per_sec"] / row["cores_obtained"], rel=0.5) for row in rows.values())
  report = input_benchmark.format_input_report(record)
  assert "harness / reference" in report and "reference (Model Garden-style)" in report
  assert "| cores obtained | per CPU second |" in report
