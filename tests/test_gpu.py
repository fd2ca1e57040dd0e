"""The GPU smoke test: what only a real GPU can show. Run it first on a new GPU machine:

  python -m pytest -m gpu

Skipped where TensorFlow sees no GPU (tests/conftest.py). Everything else a GPU run depends on
is either the code the CPU suite runs or a pure function of device facts that the CPU suite
feeds (docs/decisions.md, "GPUs").
"""

import json
import math
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from tests import processes
from tests import test_loss_scaling
from tests import test_resume
from trainer.distribute import distribution
from trainer.distribute import hardware
from trainer.distribute import precision

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def _gpu_count() -> int:
  return len(tf.config.list_physical_devices("GPU"))


@pytest.mark.parametrize("model, image_shape, batch_size", [
    ("mlp", "28,28,1", 256), ("cnn", "28,28,1", 256), ("resnet18", "32,32,3", 64)])
def test_auto_trains_on_every_gpu_at_the_precision_their_compute_capability_asks(
    model, image_shape, batch_size, tmp_path):
  batch_size = distribution.batch_for_replicas(batch_size, _gpu_count())  # 3, 5, 6, 7 GPUs.
  result = processes.run_trainer(
      f"--model={model}", "--dataset=synthetic", f"--image_shape={image_shape}",
      f"--batch_size={batch_size}", "--epochs=1", "--max_steps_per_epoch=20", "--eval_steps=2",
      "--progress=none", f"--workdir={tmp_path / model}")
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((tmp_path / model / "results.json").read_text())
  expected, _ = precision.gpu_precision(hardware.gpu_compute_capabilities())
  assert results["num_replicas"] == _gpu_count()
  assert results["strategy"] == ("mirrored" if _gpu_count() > 1 else "one_device")
  assert results["precision"] == expected
  assert results["device"].startswith("GPU:")
  assert math.isfinite(results["test_loss"]) and results["examples_per_sec"] > 0


def test_an_overflow_on_the_second_gpu_only_is_skipped_on_every_gpu(fashion_subset, tmp_path):
  if _gpu_count() < 2:
    pytest.skip("needs 2 GPUs")
  test_loss_scaling.test_an_overflow_on_replica_one_only_is_skipped_and_the_run_learns_as_in_float32(
      fashion_subset, tmp_path)


def test_sigkill_on_gpus_then_rerun_ends_bit_identical(fashion_mnist_dir, tmp_path):
  # The recipe's batch of 64 in 2 accumulation steps, split by every GPU (3, 5, 6, 7 too).
  batch_size = distribution.batch_for_replicas(64, 2 * _gpu_count())
  test_resume.test_sigkill_mid_epoch_then_rerun_ends_bit_identical(
      ("--strategy=auto", f"--batch_size={batch_size}"), (50,), fashion_mnist_dir, tmp_path)


def test_the_quick_benchmark_measures_the_gpus(tmp_path):
  output = tmp_path / "quick.json"
  result = subprocess.run([sys.executable, "-m", "trainer.benchmark", "--quick",
                           f"--output={output}"], cwd=processes.ROOT, capture_output=True,
                          text=True, timeout=1800, env={**os.environ, "PYTHONUNBUFFERED": "1"})
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(output.read_text())
  assert len(record["gpus"]) == _gpu_count()
  assert all(gpu["compute_capability"] for gpu in record["gpus"])
  assert {row["model"] for row in record["models"].values()} >= {"mlp", "cnn", "resnet18"}
  assert all(row["peers"]["harness"]["examples_per_sec"] > 0
             for row in record["models"].values())
