"""Where a run executes: logical CPU devices, the strategy, and under multi-worker the watchdog.

`open_runtime(config)` is a context manager: it resolves the Config against this machine and
cluster into RunSettings, and on every way out (success, bad input, a signal, a lost peer) it
stops the watchdog and turns TensorFlow's lost-peer errors into a ClusterError that says so.
"""

import contextlib
import dataclasses
from typing import Callable, Iterator

import tensorflow as tf

from trainer import config as config_lib
from trainer.distribute import cluster
from trainer.distribute import device_plan
from trainer.distribute import distribution
from trainer.distribute import hardware
from trainer.distribute import watchdog as watchdog_lib


@dataclasses.dataclass(frozen=True)
class Runtime:
  """A TensorFlow run's devices and cluster, opened (interface.Runtime): its strategy, what its
  config resolved to, and how to report progress."""

  strategy: tf.distribute.Strategy
  settings: config_lib.RunSettings
  heartbeat: Callable[[], None]  # Call at every sign of progress; a no-op on one host.
  # Call before the first call, which compiles: the watchdog gives it longer.
  compiling: Callable[[], None] = lambda: None


@contextlib.contextmanager
def open_runtime(config: config_lib.Config, plan) -> Iterator[Runtime]:
  """Sets up devices and the strategy for `config` as its device plan says (strategy, replicas,
  precision, the all-reduce; memory growth was set from the plan's environment before
  TensorFlow started); yields the Runtime."""
  runtime = config.runtime
  if runtime.deterministic:
    tf.config.experimental.enable_op_determinism()
  hardware.split_cpu(runtime.cpu_devices)
  tf_config = task = None
  input_index, num_inputs, hosts = 0, 1, 1
  if runtime.strategy == "multi_worker_mirrored":
    tf_config = cluster.tf_config_from_environment(runtime.worker_hosts, runtime.task_index)
    task = cluster.describe_task(tf_config)
    input_index, num_inputs = cluster.input_position(tf_config)
    hosts = device_plan.host_count(cluster.worker_addresses(tf_config))
  with contextlib.ExitStack() as stack:
    heartbeat = compiling = lambda: None
    if task:
      # A worker whose peers never come (or die) blocks inside TensorFlow; the watchdog bounds
      # that.
      watchdog = watchdog_lib.ProgressWatchdog(runtime.worker_timeout, task)
      stack.callback(watchdog.stop)
      heartbeat, compiling = watchdog.beat, watchdog.compiling
    stack.enter_context(cluster.peer_failures_reported(task))
    strategy = distribution.make_strategy(plan.strategy, tf_config,
                                          local_devices=plan.num_replicas // num_inputs,
                                          collective=plan.collective)
    heartbeat()
    device_plan.check_replicas(strategy.num_replicas_in_sync, plan)
    settings = config_lib.RunSettings(
        config=config, strategy=distribution.strategy_name(strategy),
        num_replicas=strategy.num_replicas_in_sync, precision=plan.precision,
        precision_reason=plan.precision_reason, device=hardware.describe_devices(),
        is_chief=distribution.is_chief(strategy), task=task, input_index=input_index,
        num_inputs=num_inputs, hosts=hosts, device_plan=plan)
    yield Runtime(strategy, settings, heartbeat, compiling)
