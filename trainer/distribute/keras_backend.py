"""Which Keras backend a process runs: fixed once, before the first `import keras`.

Keras reads KERAS_BACKEND when it is first imported and keeps that backend for the process's
life, so the trainer chooses it from --backend before importing anything that imports Keras,
and a process holds one backend (tests run JAX runs as subprocesses). JAX's host devices are
fixed when JAX starts too: --cpu_devices=N becomes XLA's forced host device count
(`with_host_devices`, in the device plan's environment), the JAX counterpart of TensorFlow's
logical CPU devices.
"""

import importlib.util
import os
import sys

from trainer import config as config_lib
from trainer import errors

_HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def select(runtime: config_lib.RuntimeConfig) -> None:
  """Makes `runtime.backend` the backend Keras loads with; refuses one that cannot load."""
  loaded = sys.modules.get("keras")
  if loaded is not None:
    current = loaded.backend.backend()
    if current != runtime.backend:
      raise errors.UserError(
          f"--backend={runtime.backend}: Keras is already loaded with {current} in this "
          "process, and keeps its first backend. Run the trainer in a process of its own.")
    return
  jax_installed = importlib.util.find_spec("jax") is not None
  if runtime.backend == "jax" and not jax_installed:
    raise errors.UserError("--backend=jax needs JAX, which is not installed: pip install -e "
                           "'.[jax]' (GPUs: '.[jax-cuda]'), or leave --backend out.")
  os.environ["KERAS_BACKEND"] = runtime.backend
  if jax_installed:
    # TensorFlow imports JAX too where it is installed (tf.lite tries `from jax import jit`),
    # and a Ctrl-C while jaxlib's native module initialises crashed the process (SIGSEGV in
    # nanobind's module teardown) instead of ending in one line: it waits for the import here.
    with errors.interrupts_deferred():
      import jax  # pylint: disable=g-import-not-at-top,unused-import,import-outside-toplevel


def with_host_devices(xla_flags: str, count: int) -> str:
  """XLA_FLAGS with the CPU split into `count` host devices (any earlier count replaced)."""
  kept = [flag for flag in xla_flags.split() if not flag.startswith(_HOST_DEVICES_FLAG)]
  return " ".join(kept + [f"{_HOST_DEVICES_FLAG}={count}"])
