"""The multi-worker cluster: TF_CONFIG (or --worker_hosts) checked, and the strategy over it.

TF_CONFIG is what Kubeflow's TFJob, Vertex AI and most launchers set; --worker_hosts builds the same
thing by hand. Malformed input is refused here, before TensorFlow would block waiting for peers.
"""

import contextlib
import ipaddress
import json
import os
import socket
import time
from typing import List, Optional, Sequence, Tuple

from absl import logging

import tensorflow as tf
# MultiWorkerMirroredStrategy gives a CPU-only worker a single replica; the subclass below lets
# --cpu_devices=N give it N, which is how CI runs several replicas per worker without GPUs.
from tensorflow.python.distribute import collective_all_reduce_strategy  # pylint: disable=g-direct-tensorflow-import
from tensorflow.python.distribute import distribute_lib  # pylint: disable=g-direct-tensorflow-import

from trainer import command
from trainer.distribute import hardware
from trainer import errors

TASK_TYPES = ("chief", "worker")


def tf_config_from_hosts(worker_hosts: Sequence[str], task_index: int) -> dict:
  """Returns the TF_CONFIG of worker `task_index` in a cluster of `worker_hosts` (host:port)."""
  return {"cluster": {"worker": list(worker_hosts)},
          "task": {"type": "worker", "index": task_index}}


def parse_tf_config(text: Optional[str]) -> dict:
  """Returns TF_CONFIG as a dict after checking it describes this task in a usable cluster."""
  where = "TF_CONFIG"
  if not text:
    raise errors.UserError(
        "--strategy=multi_worker_mirrored needs the cluster: set TF_CONFIG, or give "
        "--worker_hosts=host1:port1,host2:port2 --task_index=I (or use scripts/launch_local.py).")
  try:
    tf_config = json.loads(text)
  except json.JSONDecodeError as e:
    raise errors.UserError(f"{where} is not valid JSON ({e}): {text[:200]}") from None
  if not isinstance(tf_config, dict):
    raise errors.UserError(f"{where} must be a JSON object with 'cluster' and 'task'.")
  cluster = tf_config.get("cluster")
  if not isinstance(cluster, dict) or not any(cluster.get(t) for t in TASK_TYPES):
    raise errors.UserError(
        f"{where} has no workers: 'cluster' must map 'worker' (and optionally 'chief') to lists "
        'of host:port, e.g. {"cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}, ...}.')
  for task_type, hosts in cluster.items():
    if not isinstance(hosts, list) or not all(
        isinstance(h, str) and h.rpartition(":")[2].isdigit() for h in hosts):
      raise errors.UserError(
          f"{where} cluster '{task_type}' must be a list of host:port strings, got {hosts!r}.")
  task = tf_config.get("task")
  if not isinstance(task, dict) or "type" not in task or "index" not in task:
    raise errors.UserError(
        f"{where} has no 'task': add \"task\": {{\"type\": \"worker\", \"index\": I}} naming "
        "this process's place in the cluster.")
  task_type, index = task["type"], task["index"]
  if task_type not in cluster:
    raise errors.UserError(
        f"{where} task type {task_type!r} is not in the cluster ({', '.join(cluster)}).")
  if not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
    raise errors.UserError(
        f"{where} task index {index!r} is out of range: the cluster has "
        f"{len(cluster[task_type])} '{task_type}' tasks, so it must be 0 to "
        f"{len(cluster[task_type]) - 1}.")
  return tf_config


class _LocalCpuReplicasExtended(collective_all_reduce_strategy.CollectiveAllReduceExtended):

  def _initialize_local_devices(self, cluster_resolver, worker_device):
    devices, device_type = super()._initialize_local_devices(cluster_resolver, worker_device)
    if device_type == "CPU":
      devices = tuple(f"{worker_device}/device:CPU:{i}" for i in range(hardware.num_cpu_devices()))
    return devices, device_type


class _MultiWorkerCpuReplicas(tf.distribute.MultiWorkerMirroredStrategy):
  """MultiWorkerMirroredStrategy with one replica per logical CPU device of each worker."""

  def __init__(self, cluster_resolver, communication_options):  # pylint: disable=super-init-not-called
    distribute_lib.Strategy.__init__(self, _LocalCpuReplicasExtended(
        self, cluster_resolver=cluster_resolver, communication_options=communication_options))


# A device plan's collective as tf.distribute names it. AUTO would run RING between GPUs too:
# it picks NCCL only when asked.
_IMPLEMENTATIONS = {"NCCL": tf.distribute.experimental.CommunicationImplementation.NCCL,
                    "RING": tf.distribute.experimental.CommunicationImplementation.RING}


def make_multi_worker_strategy(
    tf_config: dict, collective: str = "RING") -> tf.distribute.MultiWorkerMirroredStrategy:
  """Returns MultiWorkerMirroredStrategy over the cluster of `tf_config`, all-reducing with
  `collective` (a device plan's: NCCL between GPUs, RING otherwise).

  Blocks until every worker has started; callers guard it with a watchdog.
  """
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec(tf_config["cluster"]), task_type=tf_config["task"]["type"],
      task_id=tf_config["task"]["index"], rpc_layer="grpc",
      num_accelerators={"GPU": len(hardware.gpus())})
  options = tf.distribute.experimental.CommunicationOptions(
      implementation=_IMPLEMENTATIONS.get(collective, _IMPLEMENTATIONS["RING"]))
  if not hardware.gpus() and hardware.num_cpu_devices() > 1:
    return _MultiWorkerCpuReplicas(resolver, options)
  return tf.distribute.MultiWorkerMirroredStrategy(resolver, options)


def describe_task(tf_config: dict) -> str:
  """Returns e.g. "worker 1 of 2 (127.0.0.1:2223)"."""
  task, cluster = tf_config["task"], tf_config["cluster"]
  hosts = cluster[task["type"]]
  return (f"{task['type']} {task['index']} of {sum(len(h) for h in cluster.values())} "
          f"({hosts[task['index']]})")


def input_position(tf_config: dict) -> Tuple[int, int]:
  """(this process's index, the number of processes) among those that read training data: the
  chief first (if any), then the workers, as tf.distribute numbers its input pipelines."""
  task, cluster = tf_config["task"], tf_config["cluster"]
  readers = [(kind, index) for kind in ("chief", "worker")
             for index in range(len(cluster.get(kind, ())))]
  return readers.index((task["type"], task["index"])), len(readers)


def worker_addresses(tf_config: dict) -> List[str]:
  """Every process's host:port in `input_position` order: the chief first, then the workers."""
  cluster = tf_config["cluster"]
  return [address for kind in ("chief", "worker") for address in cluster.get(kind, ())]


def tf_config_from_environment(worker_hosts: Sequence[str], task_index: int) -> dict:
  """Returns the checked cluster: from --worker_hosts when given, else from TF_CONFIG.

  Warns once when a worker's address is public (see exposed_addresses).
  """
  if worker_hosts:
    tf_config = parse_tf_config(json.dumps(tf_config_from_hosts(worker_hosts, task_index)))
  else:
    tf_config = parse_tf_config(os.environ.get("TF_CONFIG"))
  exposed = exposed_addresses(tf_config)
  if exposed:
    logging.warning(
        "Worker addresses %s are neither loopback nor private: TensorFlow's gRPC server of "
        "each worker takes unauthenticated requests on every interface. Keep the cluster on a "
        "private network or behind a firewall (README: Security).", ", ".join(exposed))
  return tf_config


def exposed_addresses(tf_config: dict) -> List[str]:
  """The cluster's host:port addresses whose host is neither loopback nor in a private range.

  TensorFlow binds each worker's gRPC server to every interface whatever its address says
  (measured: the local launcher's 127.0.0.1 workers listen on *:port), and it has no setting to
  choose one, so the address tells only where peers reach it, not who else can.
  """
  exposed = []
  for hosts in tf_config["cluster"].values():
    for address in hosts:
      host = address.rpartition(":")[0].strip("[]")
      if not _is_internal(host):
        exposed.append(address)
  return exposed


def _is_internal(host: str) -> bool:
  """True for a loopback or private (RFC 1918, link-local, ULA) host; False if public."""
  if host == "localhost":
    return True
  try:
    addresses = [ipaddress.ip_address(host)]
  except ValueError:
    try:
      addresses = [ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, None)]
    except OSError:
      return True  # Unresolvable here: TensorFlow will say so; nothing to warn about yet.
  return all(address.is_loopback or address.is_private or address.is_link_local
             for address in addresses)


@contextlib.contextmanager
def peer_failures_reported(who: Optional[str]):
  """Turns TensorFlow's errors for a lost peer into a ClusterError that says so."""
  try:
    yield
  except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
          tf.errors.CancelledError, tf.errors.AbortedError) as e:
    if who is None:
      raise
    raise errors.ClusterError(
        f"{who} lost contact with a peer worker ({type(e).__name__}): a worker has died or "
        "become unreachable. Restart the whole cluster.") from None


def leave_cluster(runtime) -> None:
  """Ends a finished multi-worker process so that no worker logs a spurious error.

  Each worker's coordination agent sends heartbeats to the chief's service: a worker still
  tearing down when the chief has exited logged "Failed to send RPC to coordination service
  ... Connection refused" (1 run in 3 under the local launcher). So every worker meets the
  others at a barrier; then the other workers exit at once, skipping TensorFlow's teardown
  (they have written all they write), while the chief waits a second before exiting: no
  worker outlives the service it reports to.
  """
  if runtime.strategy != "multi_worker_mirrored":
    return
  from tensorflow.python.eager import context  # pylint: disable=g-import-not-at-top
  tf_config = tf_config_from_environment(runtime.worker_hosts, runtime.task_index)
  task, jobs = tf_config["task"], tf_config["cluster"]
  chief = task["type"] == "chief" or (task["type"] == "worker" and task["index"] == 0
                                      and "chief" not in jobs)
  try:
    context.context().wait_at_barrier("trainer-finished", int(runtime.worker_timeout * 1000))
  except Exception:  # pylint: disable=broad-except
    return  # A peer is gone already: nothing to wait for.
  if chief:
    time.sleep(_CHIEF_GRACE_S)
    return
  command.exit_now(errors.FINISHED)


_CHIEF_GRACE_S = 1.0
