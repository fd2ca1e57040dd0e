"""End-to-end training: accuracy on real data, strategies, precisions, TensorBoard, results.json."""

import gc
import math
import os
import threading

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util
from tensorboard.plugins.hparams import plugin_data_pb2

from trainer import config as config_lib
from trainer import errors
from trainer.records import run_record
from trainer import train


def _events(folder: str) -> event_accumulator.EventAccumulator:
  accumulator = event_accumulator.EventAccumulator(
      folder, size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return accumulator


def _scalar_steps(folder: str, tag: str):
  return [(event.step, float(tensor_util.make_ndarray(event.tensor_proto)))
          for event in _events(folder).Tensors(tag)]


@pytest.mark.parametrize("api", config_lib.APIS)
@pytest.mark.slow
def test_each_api_learns_fashion_mnist_in_one_epoch(api, fashion_mnist_dir, tmp_path):
  config = config_lib.Config.from_flags(
      api=api, dataset="fashion_mnist", data_dir=fashion_mnist_dir,
                             epochs=1, strategy="default", workdir=str(tmp_path))
  results = train.train_and_evaluate(config)
  assert results["test_accuracy"] >= 0.80
  assert results["steps"] == 1875 and results["params"] == 203_530


@pytest.mark.parametrize("api", config_lib.APIS)
def test_each_api_learns_synthetic_data(api, finished_runs):
  _, results = finished_runs[api]
  # The synthetic label brightens its own pixel band: a model that trains finds it.
  assert results["test_accuracy"] > 0.9 and math.isfinite(results["test_loss"])


def _live_iterators() -> int:
  """tf.data iterators alive in this process (one-device, multi-device and distributed)."""
  return sum(1 for value in gc.get_objects()
             if type(value).__name__.endswith("Iterator")
             and type(value).__module__.startswith("tensorflow"))


@pytest.mark.slow
def test_mirrored_over_two_cpu_devices_matches_the_default_strategy(fashion_mnist_dir, tmp_path):
  base = config_lib.Config.from_flags(
      dataset="fashion_mnist", data_dir=fashion_mnist_dir, epochs=1, batch_size=64,
      max_steps_per_epoch=100, log_every=20, jit_compile=False, precision="float32",
      export_saved_model=False)
  # A finished run leaves no iterator to a later garbage collection, whose destruction of one
  # can wait up to a minute for tf.data's autotuning thread.
  gc.disable()
  try:
    before = _live_iterators()
    single = train.train_and_evaluate(base.replace(strategy="default", workdir=str(tmp_path / "1")))
    mirrored = train.train_and_evaluate(
        base.replace(strategy="mirrored", cpu_devices=2, workdir=str(tmp_path / "2")))
    for thread in threading.enumerate():  # The iterators are destroyed on threads of their own.
      if thread.name == "tf.data-release":
        thread.join()
    assert _live_iterators() == before
  finally:
    gc.enable()
  assert (single["num_replicas"], mirrored["num_replicas"]) == (1, 2)
  single_losses = _scalar_steps(str(tmp_path / "1" / "train"), "loss")
  mirrored_losses = _scalar_steps(str(tmp_path / "2" / "train"), "loss")
  assert [step for step, _ in single_losses] == [step for step, _ in mirrored_losses]
  np.testing.assert_allclose([v for _, v in mirrored_losses], [v for _, v in single_losses],
                             rtol=1e-3)
  assert mirrored["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=2e-3)


@pytest.mark.slow
def test_every_single_replica_strategy_trains_the_same_weights_in_packs(small_config, tmp_path):
  # Mirrored too: --cpu_devices=1 (the default) gives it one of this process's two CPU devices.
  config = small_config.replace(max_steps_per_epoch=50, log_every=25)
  runs = {strategy: train.train_and_evaluate(
      config.replace(strategy=strategy, workdir=str(tmp_path / strategy)))
          for strategy in ("default", "one_device", "mirrored")}
  assert {name: (r["strategy"], r["num_replicas"], r["steps_per_xla_call"])
          for name, r in runs.items()} == {name: (name, 1, 25) for name in runs}
  assert len({r["weights_sha256"] for r in runs.values()}) == 1


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.slow
def test_mixed_precision_trains_with_finite_loss(policy, small_config):
  results = train.train_and_evaluate(small_config.replace(precision=policy))
  assert results["precision"] == policy
  assert math.isfinite(results["test_loss"]) and results["test_accuracy"] > 0.1


@pytest.mark.slow
def test_mixed_float16_under_mirrored_uses_loss_scaling(small_config):
  results = train.train_and_evaluate(
      small_config.replace(precision="mixed_float16", strategy="mirrored", cpu_devices=2))
  assert results["num_replicas"] == 2 and math.isfinite(results["test_loss"])


def test_tensorboard_holds_scalars_hparams_and_config(finished_runs):
  config, results = finished_runs["functional"]
  train_dir, eval_dir = (os.path.join(config.output.workdir, name) for name in ("train", "eval"))
  assert [step for step, _ in _scalar_steps(train_dir, "loss")] == list(range(10, 201, 10))
  for tag in ("accuracy", "examples_per_sec", "step_time_ms"):
    assert _scalar_steps(train_dir, tag), tag
  assert [step for step, _ in _scalar_steps(eval_dir, "accuracy")] == [100, 200]
  assert _scalar_steps(eval_dir, "loss")[-1][1] == pytest.approx(results["test_loss"])

  run = _events(config.output.workdir)
  assert _scalar_steps(config.output.workdir, "test_accuracy")[-1][1] == pytest.approx(
      results["test_accuracy"])
  # The run's goodput and MFU, written when it ends.
  for tag, value in (("goodput/fraction", results["goodput"]["fraction"]),
                     ("goodput/lost_steps", 0), ("goodput/processes", 1),
                     ("mfu", results["mfu"])):
    assert _scalar_steps(config.output.workdir, tag) == [(200, pytest.approx(value, rel=1e-6))], tag
  hparams_content = run.PluginTagToContent("hparams")
  session = plugin_data_pb2.HParamsPluginData.FromString(
      hparams_content["_hparams_/session_start_info"]).session_start_info
  values = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
            for name, value in session.hparams.items()}
  assert values["api"] == "functional" and values["strategy"] == "default"
  assert values["precision"] == "float32" and "num_replicas" not in values  # Derived.
  assert values["global_batch_size"] == "64" and values["dataset"] == "synthetic"
  assert values["epochs"] == "2" and values["jit_compile"] == "auto"
  assert values["device"].startswith("CPU: ")
  # The trial id: the run's folder name first, then where it is.
  parent, name = os.path.split(os.path.abspath(config.output.workdir))
  assert session.group_name == f"{name} ({parent})"
  assert {"config", "environment"} <= set(run.Tags()["tensors"])


def test_results_json_has_every_field(finished_runs):
  config, returned = finished_runs["functional"]
  results = run_record.read_results(config.output.workdir)
  assert results == returned
  assert sorted(results) == sorted(run_record.FIELDS)
  assert results["schema_version"] == run_record.SCHEMA_VERSION
  assert results["examples_per_sec"] > 0 and results["wall_time_s"] > 0
  assert results["global_batch_size"] == 64 and results["steps"] == 200


def test_batch_size_not_divisible_by_replicas_is_refused_before_training(small_config):
  with pytest.raises(errors.UserError, match="--batch_size=63 cannot be split evenly across 2"):
    train.train_and_evaluate(small_config.replace(batch_size=63, strategy="mirrored",
                                                  cpu_devices=2))
  assert not os.path.exists(small_config.output.workdir)


def test_a_workdir_holding_something_else_is_not_touched(small_config):
  os.makedirs(small_config.output.workdir)
  precious = os.path.join(small_config.output.workdir, "notes.txt")
  with open(precious, "w") as f:
    f.write("keep me")
  with pytest.raises(errors.UserError, match="holds no run of this trainer.*--overwrite"):
    train.train_and_evaluate(small_config)
  assert open(precious).read() == "keep me"


@pytest.mark.slow
def test_calls_sized_by_time_train_the_same_weights_as_fixed_calls(small_config,
                                                                   restores_op_determinism):
  # Where calls end is the only thing time decides: auto, 100 and 7 steps per loop (the pack of
  # 25 then) give bit-identical weights.
  digests = {train.train_and_evaluate(small_config.replace(
      max_steps_per_epoch=300, log_every=100, deterministic=True, steps_per_loop=steps,
      num_test_examples=500, workdir=f"{small_config.output.workdir}-{steps}"))["weights_sha256"]
             for steps in (0, 100, 7)}
  assert len(digests) == 1
