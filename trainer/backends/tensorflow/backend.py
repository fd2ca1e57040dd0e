"""Keras on TensorFlow as a run's backend (trainer.backends.interface.Backend)."""

from typing import List, Sequence

import tensorflow as tf

from trainer.backends.tensorflow import runtime
from trainer.backends.tensorflow import task
from trainer.distribute import cluster


class TensorFlowBackend:
  """tf.distribute strategies, a Task under strategy.run, TensorFlow's profiler."""

  name = "tensorflow"

  def open_runtime(self, config, plan):
    return runtime.open_runtime(config, plan)

  def make_task(self, settings, opened, pipeline, build_model) -> task.Task:
    return task.Task(settings, opened.strategy, pipeline, build_model)

  def profiler(self):
    return tf.profiler.experimental.start, tf.profiler.experimental.stop

  def device_names(self) -> List[str]:
    return [device.name for device in tf.config.list_logical_devices()]

  def gpu_names(self) -> List[str]:
    return [tf.config.experimental.get_device_details(gpu).get("device_name", "unknown")
            for gpu in tf.config.list_physical_devices("GPU")]

  def leave_cluster(self, runtime_config) -> None:
    cluster.leave_cluster(runtime_config)

  def export_options(self, platforms: Sequence[str]) -> dict:
    del platforms  # A TensorFlow SavedModel runs on every device TensorFlow has kernels for.
    return {}


BACKEND = TensorFlowBackend()
