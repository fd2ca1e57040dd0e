"""Which GPUs and how much of their memory each process takes: pure functions of device facts,
tested with fake devices (no GPU needed)."""

import os
import sys

import pytest
import tensorflow as tf

from tests.processes import ROOT
from trainer import errors
from trainer.distribute import hardware

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import launch_local  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_each_worker_gets_its_own_gpus():
  assert [launch_local.visible_devices(i, 2, None, 4) for i in range(2)] == ["0,1", "2,3"]


def test_workers_share_out_the_gpus_the_launcher_was_given_in_their_order():
  assert [launch_local.visible_devices(i, 1, "3, 1,2", 8) for i in range(3)] == ["3", "1", "2"]


def test_too_few_gpus_for_the_workers_is_refused_before_any_starts():
  with pytest.raises(ValueError, match=r"worker 1 needs GPUs 2 to 3, but only 3 are available"):
    launch_local.visible_devices(1, 2, None, 3)


def test_a_workers_environment_carries_its_gpus():
  env = launch_local.worker_environment(["127.0.0.1:1", "127.0.0.1:2"], 1, "2,3")
  assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and '"index": 1' in env["TF_CONFIG"]


class _FakeGpuMemory:
  """tf.config's memory-growth calls on fake GPUs, `initialised` ones refusing changes."""

  def __init__(self, monkeypatch, initialised=()):
    self.growth, self.initialised = {}, set(initialised)
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", self.set_growth)
    monkeypatch.setattr(tf.config.experimental, "get_memory_growth",
                        lambda gpu: self.growth.get(gpu.name, False))

  def set_growth(self, gpu, growth):
    if gpu.name in self.initialised:
      raise RuntimeError("Physical devices cannot be modified after being initialized")
    self.growth[gpu.name] = growth


GPUS = [tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in range(2)]


def test_memory_growth_is_set_on_every_gpu(monkeypatch):
  memory = _FakeGpuMemory(monkeypatch)
  hardware.configure_gpu_memory(True, GPUS)
  assert memory.growth == {gpu.name: True for gpu in GPUS}


def test_a_gpu_already_in_use_with_other_memory_settings_is_one_clear_error(monkeypatch):
  _FakeGpuMemory(monkeypatch, initialised={GPUS[1].name})
  with pytest.raises(errors.UserError, match=r"--gpu_memory_growth cannot be applied: "
                     r"TensorFlow already uses /physical_device:GPU:1"):
    hardware.configure_gpu_memory(True, GPUS)
  hardware.configure_gpu_memory(False, GPUS[1:])  # The same setting as it has: fine.
