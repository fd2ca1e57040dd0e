"""GPU and cluster branches a CPU reaches: each finding of the GPU review that no CPU run shows,
checked on its own code with the devices or the framework faked (docs/gpu.md lists them)."""

import os
import types

import pytest
import tensorflow as tf

from trainer import errors
from trainer import train
from trainer.backends.jax import runtime as jax_runtime
from trainer.distribute import cluster
from trainer.distribute import device_plan
from trainer.distribute import distribution
from trainer.distribute import watchdog


def test_tensorflow_workers_all_reduce_with_the_plans_collective(monkeypatch):
  made = {}

  class Recorded:
    def __init__(self, resolver, communication_options):
      made["implementation"] = communication_options.implementation

  monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", Recorded)
  monkeypatch.setattr(cluster.hardware, "num_cpu_devices", lambda: 1)  # One replica a worker.
  tf_config = cluster.tf_config_from_hosts(["127.0.0.1:1", "127.0.0.1:2"], 0)
  cluster.make_multi_worker_strategy(tf_config, "NCCL")
  assert made["implementation"] == tf.distribute.experimental.CommunicationImplementation.NCCL
  cluster.make_multi_worker_strategy(tf_config, "RING")
  assert made["implementation"] == tf.distribute.experimental.CommunicationImplementation.RING


def test_jax_sets_the_runs_seed_before_it_joins_the_cluster():
  calls = []

  class Fake:
    class config:  # pylint: disable=invalid-name
      update = staticmethod(lambda name, value: calls.append(("config", value)))

    class utils:  # pylint: disable=invalid-name
      set_random_seed = staticmethod(lambda seed: calls.append(("seed", seed)))

    class distribution:  # pylint: disable=invalid-name
      initialize = staticmethod(lambda **cluster: calls.append(("initialize",)))

  jax_runtime._join_cluster(Fake, Fake, ["127.0.0.1:1", "127.0.0.1:2"], 1, 2, 7)  # pylint: disable=protected-access
  assert calls == [("config", "gloo"), ("seed", 7), ("initialize",)]


class XlaRuntimeError(RuntimeError):
  """JAX's error type, by its name."""


@pytest.mark.parametrize("error, detail", [
    (XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9663676416 "
                     "bytes."), "Out of memory while trying to allocate 9663676416 bytes"),
    (MemoryError(), "MemoryError"),
])
def test_an_out_of_memory_error_of_either_backend_gets_the_advice(small_config, error, detail):
  assert errors.is_out_of_memory(error)
  with pytest.raises(errors.UserError) as advice:
    built = {"task": types.SimpleNamespace(model=types.SimpleNamespace(count_params=lambda: 9))}
    with train._out_of_memory_reported(small_config, None, built):  # pylint: disable=protected-access
      raise error
  assert str(advice.value).startswith("Out of memory: the model (9 parameters)")
  assert detail in str(advice.value)
  assert not errors.is_out_of_memory(XlaRuntimeError("INTERNAL: something else"))


def _watched(monkeypatch, first: bytes, grace_s: float) -> list:
  """Runs the watchdog with a 0.3 s timeout on a clock of its own: `first` arrives at once and
  the pipe closes 0.6 s later; returns the kills it made."""
  monkeypatch.setattr(watchdog, "COMPILE_GRACE_S", grace_s)
  read, write = os.pipe()
  now, waits = [0.0], []
  arrivals = [(0.0, lambda: os.write(write, first)), (0.6, lambda: os.close(write))]

  def select(readers, writers, exceptional, timeout):
    """select.select, with the waiting done by the clock: what arrives within `timeout` is
    written to the pipe then, else the whole timeout passes."""
    del writers, exceptional  # Unused: the watchdog waits on one reader.
    waits.append(timeout)
    assert len(waits) < 100, "the watchdog neither killed nor ended"
    if arrivals and arrivals[0][0] <= now[0] + timeout:
      now[0], arrive = max(now[0], arrivals[0][0]), arrivals.pop(0)[1]
      arrive()
      return readers, [], []
    now[0] += timeout
    return [], [], []

  monkeypatch.setattr(watchdog, "select", types.SimpleNamespace(select=select))
  monkeypatch.setattr(watchdog, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
  kills = []
  watchdog.watch(123, 0.3, "worker 0", read, lambda pid, sig: kills.append(pid))
  if arrivals:  # Killed before the pipe closed.
    os.close(write)
  os.close(read)
  return kills


def test_the_first_multi_worker_call_is_not_held_to_the_worker_timeout(monkeypatch):
  assert _watched(monkeypatch, watchdog.COMPILING, grace_s=5.0) == []
  assert _watched(monkeypatch, watchdog.BEAT, grace_s=5.0) == [123]  # A beat gets no grace.


@pytest.mark.parametrize("gpus", [1, 2, 3, 5, 6, 7, 8])
def test_the_benchmarks_and_gpu_tests_batches_split_over_any_gpu_count(gpus):
  for batch_size in (1024, 256, 128, 64, 16):
    rounded = distribution.batch_for_replicas(batch_size, gpus)
    distribution.check_batch_size(rounded, gpus)
    assert batch_size <= rounded < batch_size + gpus


def test_the_plans_environment_is_set_before_devices_start_and_keeps_the_users_xla_flags(
    monkeypatch):
  monkeypatch.setattr(device_plan, "devices_started", lambda: False)
  monkeypatch.setenv("XLA_FLAGS",
                     "--xla_dump_to=/tmp/dump --xla_force_host_platform_device_count=8")
  monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
  facts = device_plan.assumed_facts(gpus_per_worker=2, gpu="A100-40GB")
  plan = device_plan.make_device_plan(
      facts, device_plan.PlanRequest(backend="jax", deterministic=True),
      device_plan.memory_estimate.ModelFootprint(10, 10, 10, 10, 10, frozenset({"Dense"})))
  device_plan.apply_environment(plan.environment)
  assert os.environ["XLA_FLAGS"] == ("--xla_dump_to=/tmp/dump "
                                     "--xla_force_host_platform_device_count=8 "
                                     "--xla_gpu_deterministic_ops=true")
  assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
