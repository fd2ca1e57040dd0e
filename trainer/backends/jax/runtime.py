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
import dataclasses
from typing import Callable, Iterator

from absl import logging
import tensorflow as tf

from trainer import config as config_lib
from trainer import errors
from trainer.distribute import cluster
from trainer.distribute import device_plan
from trainer.distribute import hardware
from trainer.distribute import watchdog as watchdog_lib


@dataclasses.dataclass(frozen=True)
class Runtime:
  """A JAX run's devices and cluster, opened (interface.Runtime): what its config resolved to,
  and how to report progress. No strategy: the distribution is Keras's global one."""

  settings: config_lib.RunSettings
  heartbeat: Callable[[], None]  # Call at every sign of progress; a no-op on one host.
  compiling: Callable[[], None]  # Call before the first call: the watchdog gives it longer.


@contextlib.contextmanager
def open_runtime(config: config_lib.Config, plan) -> Iterator[Runtime]:
  """Sets up JAX's devices and Keras's distribution for `config` as its device plan says
  (strategy, replicas, precision; JAX's environment was set from the plan before JAX started);
  yields the Runtime."""
  runtime = config.runtime
  import jax  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  if runtime.deterministic:
    tf.config.experimental.enable_op_determinism()  # The input pipeline's ops.
  task = None
  input_index, num_inputs, hosts = 0, 1, 1
  with contextlib.ExitStack() as stack:
    heartbeat = compiling = lambda: None
    if runtime.strategy == "multi_worker_mirrored":
      tf_config = cluster.tf_config_from_environment(runtime.worker_hosts, runtime.task_index)
      task = cluster.describe_task(tf_config)
      input_index, num_inputs = cluster.input_position(tf_config)
      hosts = device_plan.host_count(cluster.worker_addresses(tf_config))
      watchdog = watchdog_lib.ProgressWatchdog(runtime.worker_timeout, task)
      stack.callback(watchdog.stop)
      heartbeat, compiling = watchdog.beat, watchdog.compiling
      _join_cluster(jax, keras, cluster.worker_addresses(tf_config), input_index, num_inputs,
                    config.data.seed)
      heartbeat()
    spread = plan.strategy in ("mirrored", "multi_worker_mirrored")
    # default and one_device run on one device: the first.
    devices = jax.devices() if spread else jax.devices()[:1]
    device_plan.check_replicas(len(devices), plan)
    if spread:
      keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
      stack.callback(keras.distribution.set_distribution, None)  # The next run starts clean.
    settings = config_lib.RunSettings(
        config=config, strategy=plan.strategy, num_replicas=len(devices),
        precision=plan.precision, precision_reason=plan.precision_reason, device=_describe(jax),
        is_chief=jax.process_index() == 0, task=task, input_index=input_index,
        num_inputs=num_inputs, hosts=hosts, device_plan=plan)
    logging.info("Keras on JAX %s over %s.", jax.__version__,
                 errors.summarized([str(device) for device in devices]))
    yield Runtime(settings, heartbeat, compiling)


def _join_cluster(jax, keras, addresses, process_id: int, num_processes: int,
                  seed: int) -> None:
  """Joins the processes of the cluster: worker 0's address is the coordinator's."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # Keras agrees on a seed at join time by a CPU collective unless one is set: the run's own,
  # set first, spares every process that collective (which hung before a GPU run started).
  keras.utils.set_random_seed(seed)
  try:
    keras.distribution.initialize(job_addresses=",".join(addresses),
                                  num_processes=num_processes, process_id=process_id)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.ClusterError(
        f"Process {process_id} of {num_processes} could not join the cluster at {addresses[0]}"
        f" ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Check that every "
        "worker runs with the same --worker_hosts (or TF_CONFIG).") from None


def _describe(jax) -> str:
  devices = jax.local_devices()
  if devices[0].platform == "gpu":
    return f"GPU: {devices[0].device_kind} x{len(devices)} (JAX)"
  return f"CPU: {hardware.cpu_model()} x{len(devices)} host devices (JAX)"
