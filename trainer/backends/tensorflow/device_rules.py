"""TensorFlow's part of the device plan (trainer.backends.interface.DeviceRules): pure functions of
device facts and the run's settings, importing no framework, as tf.distribute and the Task follow
them (backends/tensorflow/runtime, distribute/distribution.make_strategy)."""

from typing import Dict, Tuple

from trainer import config as config_lib
from trainer import errors
from trainer.distribute import memory_estimate
from trainer.distribute import plan_inputs
from trainer.distribute import precision as precision_lib
from trainer.loop import schedule


class TensorFlowDeviceRules:
  """tf.distribute's strategies, XLA where --jit_compile or auto asks, RING between CPUs, packs
  of steps only under XLA on one replica."""

  cuda_missing = "this TensorFlow is built without CUDA (pip install 'tensorflow[and-cuda]')"

  def can_use_gpus(self, facts: plan_inputs.DeviceFacts) -> bool:
    return facts.tensorflow_cuda

  def check_gpus_shared(self, workers_per_host: int, gpus: int) -> None:
    """Workers that share a GPU all-reduce over RING, which takes a GPU in several processes."""
    del workers_per_host, gpus

  def one_device_strategy(self, on_gpu: bool) -> str:
    """one_device on a GPU, whose distributed iterator prefetches the batches onto it; the
    default strategy on a CPU."""
    return "one_device" if on_gpu else "default"

  def compiles_with_xla(self, request: plan_inputs.PlanRequest, num_replicas: int) -> bool:
    return config_lib.compiles_with_xla(request.jit_compile, request.model, request.batch_size,
                                        num_replicas)

  def cpu_precision(self, facts: plan_inputs.DeviceFacts,
                    request: plan_inputs.PlanRequest) -> Tuple[str, str]:
    # XLA as on one replica, so every strategy of the same settings gets the same precision.
    return precision_lib.cpu_precision(facts.cpu_bfloat16, request.model,
                                       self.compiles_with_xla(request, 1))

  def check_on_gpus(self, request: plan_inputs.PlanRequest,
                    footprint: memory_estimate.ModelFootprint, xla: bool,
                    num_replicas: int) -> None:
    """TensorFlow's XLA paths on GPUs that no CPU run can check, refused rather than trusted."""
    if not xla:
      return
    pools = sorted(kind for kind in footprint.layer_kinds if "MaxPool" in kind)
    if request.deterministic and pools:
      raise errors.UserError(
          f"--deterministic --jit_compile: XLA has no deterministic gradient of {pools[0]} "
          f"(in --model={request.model}) on GPUs. Leave out --jit_compile (TensorFlow's own "
          "kernels are deterministic) or --deterministic.")
    if request.sync_batchnorm and num_replicas > 1:
      raise errors.UserError(
          f"--sync_batchnorm --jit_compile over {num_replicas} GPU replicas: BatchNorm's "
          "cross-replica statistics inside an XLA-compiled step are not checked on GPUs. Leave "
          "out --jit_compile, or --sync_batchnorm.")

  def environment(self, request: plan_inputs.PlanRequest, on_gpu: bool,
                  local_devices: int) -> Dict[str, str]:
    """Memory growth, read as TensorFlow starts its GPUs (its CPU devices are split later, by
    the runtime)."""
    del local_devices
    return {"TF_FORCE_GPU_ALLOW_GROWTH": "true"} if on_gpu and request.gpu_memory_growth else {}

  def cpu_collective(self, workers: int) -> str:
    del workers  # RING between the logical CPU devices of one process and between processes.
    return "RING"

  def pack_limit(self, footprint: memory_estimate.ModelFootprint, on_gpu: bool, xla: bool,
                 num_replicas: int, strategy: str, batch_bytes: int) -> int:
    """Packs only under XLA on one replica (backends/tensorflow/task.Task.max_pack)."""
    del footprint, on_gpu, batch_bytes
    if xla and num_replicas == 1 and strategy != "multi_worker_mirrored":
      return schedule.MAX_PACK
    return 1


RULES = TensorFlowDeviceRules()
