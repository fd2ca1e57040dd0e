"""TFRecord shards: the converter, training from them, streaming, bad shards, and workers that
each read only their own files."""

import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tests import processes
from trainer import config as config_lib
from trainer.data import input_pipeline
from trainer.data import tfrecords
from trainer import errors
from trainer import train


def copy_shards(source, destination) -> str:
  shutil.copytree(source, destination)
  return str(destination)


def test_the_converter_writes_contiguous_shards_and_their_record(fashion_shards):
  names = sorted(os.listdir(fashion_shards))
  assert names == ["dataset.json", *[f"test-00000-of-00001"],
                   *[f"train-{i:05d}-of-00004" for i in range(4)]]
  metadata = json.load(open(os.path.join(fashion_shards, "dataset.json")))
  assert metadata["num_classes"] == 10
  assert metadata["files"]["train-00000-of-00004"] == 1000
  assert len(metadata["mean"]) == len(metadata["std"]) == 1
  assert tfrecords.count_records(os.path.join(fashion_shards, "train-00003-of-00004")) == 1000


def test_the_converter_refuses_a_folder_that_is_not_empty(fashion_subset, fashion_shards):
  with pytest.raises(errors.UserError, match="is not empty"):
    tfrecords.convert(str(fashion_subset / "idx"), fashion_shards, num_shards=2)


@pytest.mark.slow
def test_shards_train_to_the_same_weights_as_their_idx_files_in_memory(fashion_subset,
                                                                      fashion_shards, tmp_path):
  common = dict(epochs=1, batch_size=64, strategy="default", log_every=20,
                progress="none")
  from_idx = train.train_and_evaluate(config_lib.Config.from_flags(
      dataset="fashion_mnist", data_dir=str(fashion_subset / "idx"),
      workdir=str(tmp_path / "idx"), **common))
  from_shards = train.train_and_evaluate(config_lib.Config.from_flags(
      data_dir=fashion_shards, workdir=str(tmp_path / "shards"), **common))
  assert from_shards["dataset"] == "tfrecord:fashion"
  assert from_shards["weights_sha256"] == from_idx["weights_sha256"]
  assert from_shards["test_accuracy"] == from_idx["test_accuracy"] > 0.6


def test_streamed_shards_give_the_same_batches_from_any_step(fashion_shards):
  # Streamed, an epoch's order is files shuffled by (seed, epoch), an interleave and a seeded
  # shuffle buffer: not the in-memory order, but the same at every call, so a resumed run
  # skips to exactly the batches an uninterrupted run trains on.
  pipeline = input_pipeline.make_input_pipeline(config_lib.Config.from_flags(
      data_dir=fashion_shards, batch_size=100, memory_limit_mb=1).data).bounded(
          max_steps_per_epoch=6)
  assert pipeline.stream is not None and pipeline.train is None
  whole = [labels.numpy() for _, labels in pipeline.training_batches(0, 2)]
  for start in (4, 6, 9):
    resumed = [labels.numpy() for _, labels in pipeline.training_batches(start, 2)]
    assert [batch.tolist() for batch in resumed] == [batch.tolist() for batch in whole[start:]]
  assert whole[0].tolist() != whole[6].tolist()  # Each epoch is shuffled anew.


def test_shards_without_a_record_are_counted_and_their_classes_read_from_the_labels(
    fashion_shards, tmp_path):
  shards = copy_shards(fashion_shards, tmp_path / "shards")
  os.remove(os.path.join(shards, "dataset.json"))
  pipeline = input_pipeline.make_input_pipeline(config_lib.Config.from_flags(data_dir=shards,
                                                                  batch_size=100).data)
  assert pipeline.num_classes == 10 and pipeline.steps_per_epoch == 40


def _relabel(source: str, destination: str, change) -> None:
  with tf.io.TFRecordWriter(destination) as writer:
    for record in tf.data.TFRecordDataset(source):
      example = tf.train.Example.FromString(record.numpy())
      change(example)
      writer.write(example.SerializeToString())


def test_label_offset_takes_labels_that_start_at_1(fashion_shards, tmp_path):
  shards = copy_shards(fashion_shards, tmp_path / "shards")
  os.remove(os.path.join(shards, "dataset.json"))
  for name in os.listdir(shards):
    path = os.path.join(shards, name)

    def plus_one(example):
      labels = example.features.feature["image/class/label"].int64_list
      labels.value[0] += 1
    _relabel(path, path + ".new", plus_one)
    os.replace(path + ".new", path)
  pipeline = input_pipeline.make_input_pipeline(config_lib.Config.from_flags(
      data_dir=shards, batch_size=100, label_offset=1).data)
  assert pipeline.num_classes == 10
  assert pipeline.train.labels.min() == 0 and pipeline.train.labels.max() == 9


def _damage(shards: str, how: str) -> str:
  path = os.path.join(shards, "train-00002-of-00004")
  if how == "not TFRecord":
    with open(path, "wb") as file:
      file.write(b"GIF89a" + bytes(range(256)) * 40)
  elif how == "truncated":
    with open(path, "r+b") as file:
      file.truncate(os.path.getsize(path) - 100)
  elif how == "missing keys":
    def rename(example):
      feature = example.features.feature
      feature["image/png"].CopyFrom(feature["image/encoded"])
      del feature["image/encoded"]
    _relabel(os.path.join(shards, "train-00001-of-00004"), path, rename)
  elif how == "label out of range":
    def too_high(example):
      example.features.feature["image/class/label"].int64_list.value[0] = 10
    _relabel(os.path.join(shards, "train-00001-of-00004"), path, too_high)
  return path


@pytest.mark.parametrize("how, message", [
    ("not TFRecord", "is not a TFRecord file"),
    ("truncated", "is truncated or damaged after 999 complete records"),
    ("missing keys", "without the features image/encoded"),
    ("label out of range", "holds label 10, outside the 10 classes"),
])
def test_a_bad_shard_is_named_before_training(fashion_shards, tmp_path, how, message):
  shards = copy_shards(fashion_shards, tmp_path / "shards")
  path = _damage(shards, how)
  with pytest.raises(errors.UserError, match=re.escape(path) + ".*" + message
                     if how != "label out of range" else message):
    input_pipeline.make_input_pipeline(config_lib.Config.from_flags(data_dir=shards).data)


def test_a_bad_shard_exits_2_with_one_line_and_writes_nothing(fashion_shards, tmp_path, capsys):
  # The command's path, in this process (errors.shown_as_one_line, as trainer.main runs it;
  # test_main.py runs a refusal in a real process).
  shards = copy_shards(fashion_shards, tmp_path / "shards")
  path = _damage(shards, "truncated")
  workdir = tmp_path / "run"
  with pytest.raises(SystemExit) as exited:
    with errors.shown_as_one_line():
      train.train_and_evaluate(config_lib.Config.from_flags(data_dir=shards,
                                                            workdir=str(workdir)))
  assert exited.value.code == errors.BAD_INPUT
  err = capsys.readouterr().err
  assert err.startswith(f"error: {path} is truncated") and len(err.splitlines()) == 1, err
  assert not workdir.exists() or not [name for name in os.listdir(workdir) if name != ".lock"]


def test_fewer_files_than_workers_are_sharded_by_data_enough_by_file(fashion_shards):
  per_worker = [tfrecords.read_shards(fashion_shards, 0, (), index, 2) for index in range(2)]
  assert [shards.sharding for shards in per_worker] == ["file", "file"]
  assert [[os.path.basename(f) for f in shards.train_files] for shards in per_worker] == [
      ["train-00000-of-00004", "train-00002-of-00004"],
      ["train-00001-of-00004", "train-00003-of-00004"]]
  assert per_worker[0].examples_per_input == 2000
  five = tfrecords.read_shards(fashion_shards, 0, (), 0, 5)
  assert five.sharding == "data" and len(five.train_files) == 4


def test_a_worker_sharded_by_file_holds_only_its_own_files_in_memory(fashion_shards):
  pipelines = [input_pipeline.make_input_pipeline(config_lib.Config.from_flags(
      data_dir=fashion_shards, batch_size=64).data, index, 2) for index in range(2)]
  for pipeline in pipelines:
    assert pipeline.sharding == "file" and pipeline.train_batch_size == 32
    assert len(pipeline.train.labels) == 2000  # Its two files of 1,000.
    assert pipeline.steps_per_epoch == 62  # 2,000 of its own per 32 of each global 64.
  assert not np.array_equal(pipelines[0].train.images, pipelines[1].train.images)


def _opened_shards(trace: str) -> set:
  # strace lines: PID openat(AT_FDCWD, "/path/train-00000-of-00004", O_RDONLY...) = 7
  return {os.path.basename(path) for path in re.findall(r'openat\([^"]*"([^"]*)"', trace)
          if re.search(r"/(train|test)-\d{5}-of-\d{5}$", path)}


@pytest.mark.slow
def test_two_workers_each_open_only_their_own_training_files(spiking_cluster):
  # The shared two-worker run (conftest): streamed, the ImageNet case, so files are opened as
  # the interleave reaches them.
  if spiking_cluster["traces"] is None:
    pytest.skip(spiking_cluster["untraced"])
  outputs = spiking_cluster["outputs"]
  assert spiking_cluster["returncodes"] == [0, 0], outputs[0][-3000:]
  opened = [_opened_shards(trace.read_text()) for trace in spiking_cluster["traces"]]
  assert opened[0] == {"train-00000-of-00004", "train-00002-of-00004", "test-00000-of-00001"}
  assert opened[1] == {"train-00001-of-00004", "train-00003-of-00004", "test-00000-of-00001"}
  results = json.loads((spiking_cluster["workdir"] / "results.json").read_text())
  assert results["data_sharding"] == "file" and results["steps"] == 30
  assert "sharded by file over 2 workers" in outputs[0]
  # Replicas in sync: both workers end with the same weights.
  finals = [processes.FINAL_LINE.search(output).group(2) for output in outputs]
  assert finals[0] == finals[1] == results["weights_sha256"]
