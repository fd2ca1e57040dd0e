"""The runtime of a run on Keras's JAX backend: the strategies as keras.distribution.

  default, one_device   one device, no distribution (JAX's default device)
  mirrored              DataParallel over every local device: the GPUs, or the CPU split into
                        --cpu_devices host devices (keras_backend.select sets XLA's count)
  multi_worker_mirrored keras.distribution.initialize over the cluster that TF_CONFIG or
                        --worker_hosts describe (worker 0 coordinates), then DataParallel over
                        every process's devices; each process feeds its share of the batch
  auto                  as on TensorFlow: mirrored over several devices, else one device

TensorFlow stays in the process for tf.data only: its GPUs are hidden from it, so the input
pipeline takes no accelerator memory. CPU collectives between processes go through gloo.
"""

import contextlib
from typing import Iterator

from absl import logging
import tensorflow as tf

from trainer import config as config_lib
from trainer import errors
from trainer.distribute import cluster
from trainer.distribute import device_plan
from trainer.distribute import distribution
from trainer.distribute import hardware
from trainer.distribute import precision as precision_lib
from trainer.backends.tensorflow import runtime as runtime_lib
from trainer.distribute import watchdog as watchdog_lib


@contextlib.contextmanager
def open_runtime(config: config_lib.Config) -> Iterator[runtime_lib.Runtime]:
  """Sets up JAX's devices and Keras's distribution for `config` (its runtime section; the batch
  for its check); yields the Runtime."""
  runtime = config.runtime
  import jax  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  if runtime.deterministic:
    tf.config.experimental.enable_op_determinism()  # The input pipeline's ops.
  task = None
  input_index, num_inputs, hosts = 0, 1, 1
  with contextlib.ExitStack() as stack:
    heartbeat = lambda: None
    if runtime.strategy == "multi_worker_mirrored":
      tf_config = cluster.tf_config_from_environment(runtime.worker_hosts, runtime.task_index)
      task = cluster.describe_task(tf_config)
      input_index, num_inputs = cluster.input_position(tf_config)
      hosts = device_plan.host_count(cluster.worker_addresses(tf_config))
      watchdog = watchdog_lib.ProgressWatchdog(runtime.worker_timeout, task)
      stack.callback(watchdog.stop)
      heartbeat = watchdog.beat
      _join_cluster(jax, keras, cluster.worker_addresses(tf_config), input_index, num_inputs)
      heartbeat()
    strategy = _strategy_name(runtime.strategy, len(jax.local_devices()))
    devices = jax.devices() if strategy != "default" else jax.devices()[:1]
    if strategy in ("mirrored", "multi_worker_mirrored"):
      keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
      stack.callback(keras.distribution.set_distribution, None)  # The next run starts clean.
    distribution.check_batch_size(config.data.batch_size, len(devices),
                                  config.optim.grad_accum_steps)
    policy, reason = _precision(runtime.precision, jax)
    settings = config_lib.RunSettings(
        config=config, strategy=strategy, num_replicas=len(devices), precision=policy,
        precision_reason=reason, device=_describe(jax), is_chief=jax.process_index() == 0,
        task=task, input_index=input_index, num_inputs=num_inputs, hosts=hosts)
    logging.info("Keras on JAX %s over %s.", jax.__version__,
                 errors.summarized([str(device) for device in devices]))
    yield runtime_lib.Runtime(None, settings, heartbeat)


def _strategy_name(requested: str, local_devices: int) -> str:
  if requested == "auto":
    return "mirrored" if local_devices > 1 else "default"
  return requested


def _join_cluster(jax, keras, addresses, process_id: int, num_processes: int) -> None:
  """Joins the processes of the cluster: worker 0's address is the coordinator's."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    keras.distribution.initialize(job_addresses=",".join(addresses),
                                  num_processes=num_processes, process_id=process_id)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.ClusterError(
        f"Process {process_id} of {num_processes} could not join the cluster at {addresses[0]}"
        f" ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Check that every "
        "worker runs with the same --worker_hosts (or TF_CONFIG).") from None


def _precision(requested: str, jax):
  """auto on JAX: the GPU rule (precision.gpu_precision); float32 on CPUs, where the bfloat16
  measurements behind TensorFlow's choice were of oneDNN's kernels, not XLA's."""
  if requested != "auto":
    return requested, "asked for with --precision"
  capabilities = [tuple(int(part) for part in device.compute_capability.split("."))
                  for device in jax.devices() if device.platform == "gpu"
                  and getattr(device, "compute_capability", None)]
  if capabilities:
    return precision_lib.gpu_precision(capabilities)
  return precision_lib.JAX_CPU_PRECISION


def _describe(jax) -> str:
  devices = jax.local_devices()
  if devices[0].platform == "gpu":
    return f"GPU: {devices[0].device_kind} x{len(devices)} (JAX)"
  return f"CPU: {hardware.cpu_model()} x{len(devices)} host devices (JAX)"
