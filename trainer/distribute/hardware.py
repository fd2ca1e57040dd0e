"""What the run executes on: accelerators found, a one-line device description, CPU splitting."""

import os
import platform
from typing import List

import tensorflow as tf

from trainer import errors


def split_cpu(num_devices: int) -> None:
  """Splits the host CPU into `num_devices` logical devices, so mirrored runs that many replicas.

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


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def describe_devices() -> str:
  """Returns e.g. "GPU: NVIDIA H100 x8" or "CPU: AMD EPYC x2 cores"."""
  found = gpus()
  if found:
    name = tf.config.experimental.get_device_details(found[0]).get("device_name", "unknown")
    return f"GPU: {name} x{len(found)}"
  return f"CPU: {_cpu_model()} x{os.cpu_count()} cores"
