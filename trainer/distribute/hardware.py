"""What the run executes on: accelerators found, a one-line device description, CPU splitting."""

import os
import platform
import subprocess
from typing import List, Optional, Set

import tensorflow as tf

from trainer import errors


def split_cpu(num_devices: int, share_threads: bool = True) -> None:
  """Splits the host CPU into `num_devices` logical devices, so mirrored runs that many replicas,
  each with its share of the cores as intra-op threads (unless not `share_threads`).

  Must run before TensorFlow initialises its devices, i.e. before any op executes.
  """
  if num_devices < 1:
    raise errors.UserError(f"--cpu_devices={num_devices}: must be at least 1.")
  if num_devices == 1:
    return
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    # The devices' ops run at once, each on the one intra-op pool: with a thread per core for
    # each, they oversubscribe the cores. A share each ran resnet18 (32x32x3, batch 128,
    # bfloat16) under mirrored x2 at 157-165 examples/s against 150 (2-core AMX Xeon).
    if share_threads:
      tf.config.threading.set_intra_op_parallelism_threads(
          max(1, (os.cpu_count() or 1) // num_devices))
  except RuntimeError:
    # Already initialised, as in a test process that split the CPU up front: fine if it matches.
    if len(tf.config.list_logical_devices("CPU")) != num_devices:
      raise errors.UserError(
          f"--cpu_devices={num_devices} cannot be applied: TensorFlow already runs with "
          f"{len(tf.config.list_logical_devices('CPU'))} CPU devices in this process.") from None


def num_cpu_devices() -> int:
  """Returns how many logical devices the CPU is split into, without starting TensorFlow.

  MultiWorkerMirroredStrategy must configure TensorFlow before it starts, so this reads the
  configuration rather than listing the devices.
  """
  configured = tf.config.get_logical_device_configuration(tf.config.list_physical_devices("CPU")[0])
  return len(configured) if configured else 1


def gpus() -> List[tf.config.PhysicalDevice]:
  """Returns the physical GPUs TensorFlow sees."""
  return tf.config.list_physical_devices("GPU")


def gpu_compute_capabilities() -> List[tuple]:
  """Returns the (major, minor) compute capability of each GPU."""
  return [tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
          for gpu in gpus()]


def _cpuinfo_field(name: str) -> str:
  """The first value of `name` in /proc/cpuinfo ("" where there is none, as off Linux)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.split(":", 1)[0].strip() == name:
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return ""


def cpu_model() -> str:
  """The CPU's model name, e.g. "Intel(R) Xeon(R) Platinum 8488C"."""
  return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> Set[str]:
  """The CPU's feature flags as Linux names them (avx512f, avx512_bf16, amx_bf16, ...)."""
  return set(_cpuinfo_field("flags").split())


def cpu_bfloat16() -> Optional[str]:
  """The CPU's bfloat16 matrix instructions, "AMX-BF16" or "AVX512_BF16", or None; oneDNN runs
  bfloat16 convolutions and matmuls on them."""
  flags = cpu_flags()
  if "amx_bf16" in flags:
    return "AMX-BF16"
  if "avx512_bf16" in flags:
    return "AVX512_BF16"
  return None


def describe_gpus() -> List[dict]:
  """Every GPU: name, compute capability and memory (MiB, from nvidia-smi where it runs)."""
  found = gpus()
  memory = {}
  try:
    listing = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    memory = {int(index): int(total) for index, total in
              (line.split(",") for line in listing.strip().splitlines())}
  except (OSError, subprocess.SubprocessError, ValueError):
    pass
  described = []
  for index, gpu in enumerate(found):
    details = tf.config.experimental.get_device_details(gpu)
    described.append({"name": details.get("device_name", "unknown"),
                      "compute_capability": list(details.get("compute_capability", ())),
                      "memory_mib": memory.get(index)})
  return described


def describe_devices() -> str:
  """Returns e.g. "GPU: NVIDIA H100 x8" or "CPU: AMD EPYC x2 cores"."""
  found = gpus()
  if found:
    name = tf.config.experimental.get_device_details(found[0]).get("device_name", "unknown")
    return f"GPU: {name} x{len(found)}"
  return f"CPU: {cpu_model()} x{os.cpu_count()} cores"
