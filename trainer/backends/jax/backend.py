"""Keras on JAX as a run's backend (trainer.backends.interface.Backend)."""

from typing import List, Sequence

import jax

from trainer.backends.jax import runtime
from trainer.backends.jax import task


class JaxBackend:
  """keras.distribution over JAX's devices, a jitted stateless step, JAX's profiler."""

  name = "jax"

  def open_runtime(self, config, plan):
    return runtime.open_runtime(config, plan)

  def make_task(self, settings, opened, pipeline, build_model) -> task.JaxTask:
    del opened  # The distribution is Keras's global one.
    return task.JaxTask(settings, pipeline, build_model)

  def profiler(self):
    # JAX's profiler traces its compiled steps, which TensorFlow's does not see; both write
    # the same plugins/profile layout.
    return jax.profiler.start_trace, jax.profiler.stop_trace

  def device_names(self) -> List[str]:
    return [str(device) for device in jax.devices()]

  def gpu_names(self) -> List[str]:
    return [device.device_kind for device in jax.devices() if device.platform == "gpu"]

  def leave_cluster(self, runtime_config) -> None:
    del runtime_config  # JAX's distributed client leaves the cluster at exit on its own.

  def export_options(self, platforms: Sequence[str]) -> dict:
    # jax2tf lowers for JAX's default platform alone unless told: a GPU run's SavedModel would
    # then not serve on a CPU.
    return {"jax2tf_kwargs": {"native_serialization_platforms": tuple(platforms)}}


BACKEND = JaxBackend()
