"""What a device plan is made from: `DeviceFacts` (a worker's machine) and `PlanRequest` (the
run's settings that matter). Plain data that imports no framework, so each backend's device rules
(trainer/backends/*/device_rules.py) take them before TensorFlow or JAX starts its devices."""

import dataclasses
from typing import Optional, Tuple

from trainer import config as config_lib


@dataclasses.dataclass(frozen=True)
class DeviceFacts:
  """What a worker's machine offers, as read before any framework starts its devices."""

  gpus: int = 0  # The GPUs this worker may use (CUDA_VISIBLE_DEVICES applied).
  gpu_name: str = ""  # As nvidia-smi prints it: "NVIDIA A100-SXM4-40GB".
  compute_capability: Optional[Tuple[int, int]] = None  # The oldest GPU's.
  gpu_memory_bytes: Optional[int] = None  # The smallest GPU's; None where unknown (MIG).
  gpu_ids: Tuple[str, ...] = ()  # The GPUs as CUDA_VISIBLE_DEVICES names them.
  tensorflow_cuda: bool = True  # TensorFlow here can use the GPUs.
  jax_cuda: bool = True  # JAX's CUDA plugin is installed.
  cpu_name: str = "CPU"
  cpu_bfloat16: Optional[str] = None  # "AMX-BF16", "AVX512_BF16" or None.
  host_memory_bytes: Optional[int] = None
  workers: int = 1  # Processes in the cluster.
  workers_per_host: int = 1  # Of them, on this worker's host.
  host_worker_index: int = 0  # This worker's place among its host's workers.
  gpus_shared: bool = False  # The workers of one host all see its every GPU.

  @property
  def platform(self) -> str:
    return "gpu" if self.gpus else "cpu"

  @property
  def devices_per_worker(self) -> int:
    return self.gpus or 1


@dataclasses.dataclass(frozen=True)
class PlanRequest:
  """The settings a device plan depends on, named as their flags."""

  backend: str = "tensorflow"
  strategy: str = "auto"
  precision: str = "auto"
  batch_size: int = 32  # Global: over every replica of every worker.
  model: str = "mlp"
  jit_compile: Optional[bool] = None
  deterministic: bool = False
  gpu_memory_growth: bool = True
  sync_batchnorm: bool = False
  grad_accum_steps: int = 1
  cpu_devices: int = 1
  optimizer: str = "adam"
  momentum: float = 0.9
  ema_decay: float = 0.0

  @classmethod
  def from_config(cls, config: config_lib.Config) -> "PlanRequest":
    """The request of the run that `config` describes."""
    return cls(**{field.name: config.to_flags()[field.name]
                  for field in dataclasses.fields(cls)})
