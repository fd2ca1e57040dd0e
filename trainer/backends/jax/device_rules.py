"""JAX's part of the device plan (trainer.backends.interface.DeviceRules): pure functions of device
facts and the run's settings, importing no framework (and so not JAX, whose environment they set
before it starts its backend), as backends/jax/runtime and the JaxTask follow them."""

from typing import Dict, Tuple

from trainer import errors
from trainer.distribute import keras_backend
from trainer.distribute import memory_estimate
from trainer.distribute import plan_inputs
from trainer.distribute import precision as precision_lib
from trainer.loop import schedule

DETERMINISTIC_XLA_ON_GPUS = "--xla_gpu_deterministic_ops=true"


class JaxDeviceRules:
  """keras.distribution over JAX's devices: every step compiled by XLA, the default strategy on
  one device, gloo between CPU processes, packs bounded as schedule.pack_limit says."""

  cuda_missing = "JAX has no CUDA plugin (pip install -e '.[jax-cuda]')"

  def can_use_gpus(self, facts: plan_inputs.DeviceFacts) -> bool:
    return facts.jax_cuda

  def check_gpus_shared(self, workers_per_host: int, gpus: int) -> None:
    """JAX's GPU processes all-reduce over NCCL, which refuses a GPU in two of them."""
    raise errors.UserError(
        f"{workers_per_host} JAX workers on one host share its "
        f"{errors.plural(gpus, 'GPU')}, and NCCL refuses a GPU in two processes: run at most "
        f"{gpus} workers there, each with GPUs of its own (scripts/launch_local.py "
        "--gpus_per_worker).")

  def one_device_strategy(self, on_gpu: bool) -> str:
    del on_gpu  # One device is JAX's default one, GPU or CPU.
    return "default"

  def compiles_with_xla(self, request: plan_inputs.PlanRequest, num_replicas: int) -> bool:
    del request, num_replicas  # Every JAX step is a jitted function.
    return True

  def cpu_precision(self, facts: plan_inputs.DeviceFacts,
                    request: plan_inputs.PlanRequest) -> Tuple[str, str]:
    del facts, request
    return precision_lib.JAX_CPU_PRECISION

  def check_on_gpus(self, request: plan_inputs.PlanRequest,
                    footprint: memory_estimate.ModelFootprint, xla: bool,
                    num_replicas: int) -> None:
    """Nothing refused: TensorFlow's refusals are of its own XLA paths; JAX asks XLA for
    deterministic GPU ops in its environment, and its step's BatchNorm already normalises over
    the global batch."""
    del request, footprint, xla, num_replicas

  def environment(self, request: plan_inputs.PlanRequest, on_gpu: bool,
                  local_devices: int) -> Dict[str, str]:
    """What JAX reads as it starts its backend: GPU preallocation and XLA's flags (deterministic
    GPU ops; on CPUs the host devices --cpu_devices splits them into)."""
    environment, xla_flags = {}, []
    if on_gpu:
      if request.gpu_memory_growth:
        # JAX takes 75% of every GPU at start unless told; this is --gpu_memory_growth for it.
        environment["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
      if request.deterministic:
        xla_flags.append(DETERMINISTIC_XLA_ON_GPUS)
    elif local_devices > 1:
      xla_flags.append(keras_backend.with_host_devices("", local_devices))
    if xla_flags:
      environment["XLA_FLAGS"] = " ".join(xla_flags)
    return environment

  def cpu_collective(self, workers: int) -> str:
    """gloo between processes; within one, XLA's own between its host devices."""
    return "gloo" if workers > 1 else "in-process"

  def pack_limit(self, footprint: memory_estimate.ModelFootprint, on_gpu: bool, xla: bool,
                 num_replicas: int, strategy: str, batch_bytes: int) -> int:
    del xla, num_replicas, strategy
    return schedule.pack_limit("gpu" if on_gpu else "cpu",
                               schedule.has_convolutions(footprint.layer_kinds), batch_bytes)


RULES = JaxDeviceRules()
