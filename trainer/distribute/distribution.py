"""Strategies: --strategy name to tf.distribute.Strategy, the chief, the batch split, datasets."""

import itertools
from typing import List, Optional, Sequence, Union

import tensorflow as tf

from trainer import config
from trainer.distribute import cluster
from trainer import errors

_mirrored_strategies_made = itertools.count(1)
_KEYS_PER_STRATEGY = 10_000  # Collective group keys one strategy may use.


def make_strategy(name: str, tf_config: Optional[dict] = None,
                  local_devices: Optional[int] = None,
                  collective: str = "RING") -> tf.distribute.Strategy:
  """Returns the strategy called `name` (one of config.STRATEGIES) over this host's devices.

  auto is mirrored over several GPUs (or several logical CPUs from --cpu_devices), one_device on
  a single GPU, and the default strategy otherwise. multi_worker_mirrored spans the cluster of
  `tf_config` (see trainer.distribute.cluster), all-reducing with `collective` (a device
  plan's: NCCL, RING). `local_devices` (a plan's) limits mirrored to that many of them. Never
  returns None.
  """
  if name == "multi_worker_mirrored":
    return cluster.make_multi_worker_strategy(tf_config, collective)
  gpus = tf.config.list_logical_devices("GPU")
  cpus = tf.config.list_logical_devices("CPU")
  devices = [d.name for d in (gpus or cpus)][:local_devices]
  if name == "auto":
    name = "mirrored" if len(devices) > 1 else ("one_device" if gpus else "default")
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(devices[0])
  if name == "mirrored":
    # Every MirroredStrategy numbers its collective ops from the same keys, and TensorFlow keeps
    # them for the process's life: a second strategy in one process (a notebook, the tests)
    # whose model has other gradient shapes fails with "Shape mismatch in the collective
    # instance" (tensorflow/tensorflow#62790). A key range of its own keeps each apart.
    tf.distribute.MirroredStrategy._collective_key_base = (  # pylint: disable=protected-access
        _KEYS_PER_STRATEGY * next(_mirrored_strategies_made))
    # Without a device list MirroredStrategy ignores logical CPUs and runs a single replica.
    return tf.distribute.MirroredStrategy(devices)
  raise ValueError(f"Unknown strategy {name!r}; expected one of {', '.join(config.STRATEGIES)}.")


def strategy_name(strategy: tf.distribute.Strategy) -> str:
  """Returns the --strategy name that `strategy` answers to (after auto is resolved)."""
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return "multi_worker_mirrored"
  return {tf.distribute.OneDeviceStrategy: "one_device",
          tf.distribute.MirroredStrategy: "mirrored"}.get(type(strategy), "default")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True for the one process that writes logs, results and exports."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  if resolver.task_type == "chief":
    return True
  return resolver.task_type == "worker" and resolver.task_id == 0 and (
      "chief" not in resolver.cluster_spec().as_dict())


def distribute_dataset(strategy: tf.distribute.Strategy,
                       dataset: tf.data.Dataset) -> Union[tf.data.Dataset,
                                                          tf.distribute.DistributedDataset]:
  """Returns `dataset` as `strategy.run` takes it: split across the replicas, or, for a single
  replica on the host CPU, the dataset itself.

  For that one CPU replica tf.distribute's iterator would only copy each element through a
  MultiDeviceIterator to the memory it is already in: at batch 32 that copy cost one_device and
  mirrored about a quarter of their throughput against default here. strategy.run hands plain
  tensors to its one replica unchanged. GPUs keep the distributed iterator, which prefetches
  onto the device.
  """
  name = strategy_name(strategy)
  if (name in ("one_device", "mirrored") and strategy.num_replicas_in_sync == 1 and
      "CPU" in strategy.extended.worker_devices[0].upper()):
    return dataset
  return strategy.experimental_distribute_dataset(dataset)


def distribute_per_process(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset,
                           global_batch_size: int) -> tf.distribute.DistributedDataset:
  """Returns `dataset`, whose elements are this process's own part of each global batch (it
  read only its own files), as `strategy.run` takes it: each local replica an equal slice.

  tf.distribute's auto-sharding would split every element again across the workers; handing
  it the dataset from a function tells it the elements are this worker's already.
  """
  def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
    return dataset.rebatch(context.get_per_replica_batch_size(global_batch_size))
  return strategy.distribute_datasets_from_function(dataset_fn)


def replica_averaged(variables: Sequence) -> List[tf.Variable]:
  """Of Keras `variables`, the floating-point ones whose copies are averaged over replicas
  (aggregation "mean", as the ResNets' BatchNorm statistics): what `average_replica_copies`
  takes after each step."""
  return [variable.value for variable in variables
          if variable.aggregation == "mean" and variable.value.dtype.is_floating]


def average_replica_copies(variables: Sequence[tf.Variable]) -> None:
  """Sets each replica's copy of `variables` (distributed variables, e.g. BatchNorm's moving
  statistics) to their mean over every replica of every worker, in one all-reduce. Call it in a
  replica context, after a step in which each replica updated its own copy."""
  context = tf.distribute.get_replica_context()
  if not variables or context is None or context.num_replicas_in_sync == 1:
    return
  copies = [variable._get_on_device_or_primary()  # pylint: disable=protected-access
            for variable in variables]
  means = context.all_reduce(tf.distribute.ReduceOp.MEAN, [copy.read_value() for copy in copies])
  for copy, mean in zip(copies, means):
    copy.assign(mean)


def batch_for_replicas(batch_size: int, replicas: int) -> int:
  """`batch_size` rounded up to a multiple of `replicas`: a fixed batch (the benchmark's, the
  GPU tests') that 3, 5, 6 or 7 GPUs can split."""
  return -(-batch_size // replicas) * replicas


def check_batch_size(global_batch_size: int, replicas: int, grad_accum_steps: int = 1) -> None:
  """Refuses a global batch the replicas (and each replica's accumulation steps) cannot split
  evenly (TF would fail mid-step)."""
  if global_batch_size % replicas:
    lower = global_batch_size // replicas * replicas
    raise errors.UserError(
        f"--batch_size={global_batch_size} cannot be split evenly across {replicas} replicas. "
        f"Use a multiple of {replicas}, such as {lower or replicas} or {lower + replicas}.")
  per_replica = global_batch_size // replicas
  if per_replica % grad_accum_steps:
    raise errors.UserError(
        f"--grad_accum_steps={grad_accum_steps} does not divide the batch of each of the "
        f"{replicas} replicas ({per_replica} = --batch_size={global_batch_size} / {replicas}). "
        f"Use a --batch_size that is a multiple of {replicas * grad_accum_steps}, or fewer "
        "--grad_accum_steps.")
