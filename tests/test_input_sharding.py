"""Several workers: each selects its training examples before decoding them, and each step's
batches of the workers are the rows of a one-process run's global batch, for every source.

The pipelines are built here with input_index and num_inputs given directly, as a worker of a
cluster builds its own: milliseconds to seconds, no processes (the two-process check is
tests/test_multi_worker.py's shard probe).
"""

import threading

import numpy as np
import pytest
import tensorflow as tf

from tests import datasets
from trainer import config as config_lib
from trainer.data import augment
from trainer.data import input_pipeline
from trainer.data import preprocessing
from trainer.data import sources
from trainer.data import tfrecords

WORKERS = 2


class Calls:
  """Counts what a function does inside tf.data graphs: each call adds `weight(result)`."""

  def __init__(self):
    self.count = 0
    self._lock = threading.Lock()  # tf.data calls it from several threads at once.

  def wrap(self, function, weight=lambda result: tf.constant(1, tf.int64)):
    def counted(*args, **kwargs):
      result = function(*args, **kwargs)
      tick = tf.py_function(self._add, [weight(result)], tf.int64)
      with tf.control_dependencies([tick]):
        return tf.nest.map_structure(tf.identity, result)
    return counted

  def _add(self, amount):
    with self._lock:
      self.count += int(amount)
    return amount


def _pipeline(input_index=0, num_inputs=1, **flags) -> input_pipeline.InputPipeline:
  config = config_lib.Config.from_flags(**flags)
  return input_pipeline.make_input_pipeline(config.data, input_index, num_inputs).bounded(
      config.loop.max_steps_per_epoch)


def _held(input_index=0, num_inputs=1, **settings) -> input_pipeline.InputPipeline:
  """Decoded images held in memory, as IDX files, small folders and tfds datasets give them."""
  images = np.random.default_rng(2).integers(0, 256, (96, 8, 8, 3), dtype=np.uint8)
  labels = np.arange(96, dtype=np.int32) % 4
  return input_pipeline.InputPipeline(
      global_batch_size=16, seed=0, steps_per_epoch=6, eval_steps=1, num_test_examples=16,
      image_shape=(8, 8, 3), num_classes=4, name="test",
      source=sources.Held(sources.Split(images, labels), sources.Split(images, labels), 0),
      sharding="data" if num_inputs > 1 else "none", num_inputs=num_inputs,
      input_index=input_index, **settings)


def _batches(pipeline, start_step=0, num_epochs=2):
  return [(images.numpy(), labels.numpy())
          for images, labels in pipeline.training_batches(start_step, num_epochs)]


def assert_slices_of_one_process(make, start_step=0, num_epochs=2):
  """Per step, worker w's batch is rows [w*b, (w+1)*b) of the one-process global batch."""
  whole = _batches(make(0, 1), start_step, num_epochs)
  parts = [_batches(make(index, WORKERS), start_step, num_epochs) for index in range(WORKERS)]
  assert whole and all(len(part) == len(whole) for part in parts)
  for step, (images, labels) in enumerate(whole):
    width = len(labels) // WORKERS
    for index, part in enumerate(parts):
      rows = slice(index * width, (index + 1) * width)
      np.testing.assert_array_equal(part[step][1], labels[rows], err_msg=f"step {step}")
      np.testing.assert_array_equal(part[step][0], images[rows], err_msg=f"step {step}")


# ---------------------------------------------------------------- Held in memory.
@pytest.mark.parametrize("settings", [
    {"augment": "crop_flip", "normalization": ((0.4,) * 3, (0.2,) * 3)},
    pytest.param({}, marks=pytest.mark.slow), pytest.param({"augment": "flip"},
                                                           marks=pytest.mark.slow)])
def test_workers_make_the_rows_of_the_global_batch_from_data_held_decoded(settings):
  # From a step inside the first epoch, as a resumed run asks, into the next.
  assert_slices_of_one_process(lambda index, count: _held(index, count, **settings),
                               start_step=4)


def test_the_batches_a_data_service_makes_are_each_workers_rows_alone():
  # Each trainer process's service job makes only its slice: one global batch a step in all.
  def by_step(pipeline):
    return [(images.numpy(), labels.numpy())
            for images, labels in pipeline.batches_by_step(5).take(2)]
  whole = by_step(_held(0, 1, augment="crop_flip"))
  parts = [by_step(_held(index, WORKERS, augment="crop_flip")) for index in range(WORKERS)]
  for step, (images, labels) in enumerate(whole):
    np.testing.assert_array_equal(np.concatenate([part[step][0] for part in parts]), images)
    np.testing.assert_array_equal(np.concatenate([part[step][1] for part in parts]), labels)


def test_each_worker_augments_only_its_rows_of_data_held_decoded(monkeypatch):
  rows = Calls()
  monkeypatch.setattr(augment, "augment_batch", rows.wrap(
      augment.augment_batch, weight=lambda images: tf.shape(images, out_type=tf.int64)[0]))
  for index in range(WORKERS):
    _batches(_held(index, WORKERS, augment="crop_flip"), num_epochs=1)
  one = rows.count
  assert one == 6 * 16  # Both workers: an epoch's 6 global batches of 16, once.
  rows.count = 0
  _batches(_held(0, WORKERS, augment="crop_flip"), num_epochs=1)
  assert rows.count == 6 * 8


def test_synthetic_workers_make_the_rows_of_the_global_batch():
  assert_slices_of_one_process(lambda index, count: _pipeline(
      index, count, dataset="synthetic", batch_size=16, max_steps_per_epoch=2,
      image_shape=(6, 6, 1)))


# ---------------------------------------------------------------- Files: folders, shards, tfds.
@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory) -> str:
  """48 training and 12 test JPEGs of 80x96 shapes: trained on at 72x72 they are held encoded
  and each is cropped from its original."""
  root = str(tmp_path_factory.mktemp("jpegs"))
  datasets.write_shape_folder(root, "train", 48, 80, 96, seed=0, extension="jpg")
  datasets.write_shape_folder(root, "test", 12, 80, 96, seed=1, extension="jpg")
  return root


@pytest.fixture(scope="module")
def jpeg_shards(jpeg_folder, tmp_path_factory) -> dict:
  """jpeg_folder as 4 training shards (enough for each worker to read its own) and as 1."""
  made = {}
  for count in (4, 1):
    made[count] = str(tmp_path_factory.mktemp("shards") / str(count))
    tfrecords.convert(jpeg_folder, made[count], num_shards=count)
  return made


def _decodes(monkeypatch, pipeline_class_or_module, name) -> Calls:
  calls = Calls()
  monkeypatch.setattr(pipeline_class_or_module, name,
                      calls.wrap(getattr(pipeline_class_or_module, name)))
  return calls


# Held encoded (each image cropped from its bytes per example) and streamed (encoded or decoded).
FILE_SOURCES = [
    pytest.param({"image_size": (72, 72), "augment": "crop_flip"}, id="folder-encoded-held"),
    pytest.param({"image_size": (72, 72), "augment": "crop_flip", "memory_limit_mb": 0.001},
                 id="folder-encoded-streamed", marks=pytest.mark.slow),
    pytest.param({"image_size": (24, 24), "augment": "flip", "memory_limit_mb": 0.001},
                 id="folder-decoded-streamed"),
]


@pytest.mark.slow
@pytest.mark.parametrize("settings", FILE_SOURCES)
def test_folder_workers_make_the_rows_of_the_global_batch(jpeg_folder, settings):
  assert_slices_of_one_process(lambda index, count: _pipeline(
      index, count, data_dir=jpeg_folder, batch_size=8, **settings), start_step=2)


@pytest.mark.parametrize("settings", FILE_SOURCES)
def test_each_folder_worker_decodes_only_its_share(jpeg_folder, monkeypatch, settings):
  made = [_pipeline(index, WORKERS, data_dir=jpeg_folder, batch_size=8, **settings)
          for index in range(WORKERS)]
  streamed = made[0].stream is not None
  assert streamed == ("memory_limit_mb" in settings)
  if streamed:
    calls = _decodes(monkeypatch, type(made[0].stream), "decode")
  else:
    calls = _decodes(monkeypatch, preprocessing, "training_image")
  _batches(made[0], num_epochs=1)
  assert calls.count == made[0].steps_per_epoch * 4  # 4 of each global batch of 8.
  assert made[0].steps_per_epoch == 48 // 8


@pytest.mark.slow
def test_shard_workers_read_their_own_files_or_decode_their_slice(jpeg_shards, monkeypatch):
  # Enough files: each worker reads its own (2 of 4) and makes batches of its own examples.
  by_file = [_pipeline(index, WORKERS, data_dir=jpeg_shards[4], batch_size=8,
                       image_size=(72, 72), memory_limit_mb=0.001) for index in range(WORKERS)]
  assert [pipeline.sharding for pipeline in by_file] == ["file", "file"]
  decodes = _decodes(monkeypatch, type(by_file[0].stream), "decode")
  _batches(by_file[0], num_epochs=1)
  assert decodes.count == by_file[0].steps_per_epoch * 4
  # One file for two workers: each decodes only its slice of the one-process batches.
  assert_slices_of_one_process(lambda index, count: _pipeline(
      index, count, data_dir=jpeg_shards[1], batch_size=8, image_size=(72, 72),
      memory_limit_mb=0.001), start_step=2)
  decodes.count = 0
  one_file = _pipeline(1, WORKERS, data_dir=jpeg_shards[1], batch_size=8, image_size=(72, 72),
                       memory_limit_mb=0.001)
  assert one_file.sharding == "data"
  _batches(one_file, num_epochs=1)
  assert decodes.count == one_file.steps_per_epoch * 4


@pytest.mark.slow
def test_tfds_workers_decode_only_their_slice_of_the_global_batch(tiny_tfds, monkeypatch):
  def make(index, count):
    return _pipeline(index, count, dataset="tiny_shapes", tfds_data_dir=tiny_tfds,
                     batch_size=30, memory_limit_mb=0.01, augment="flip")
  assert_slices_of_one_process(make)
  worker = make(1, WORKERS)
  assert worker.stream is not None
  decodes = _decodes(monkeypatch, type(worker.stream), "decode")
  _batches(worker, num_epochs=1)
  assert decodes.count == worker.steps_per_epoch * 15
