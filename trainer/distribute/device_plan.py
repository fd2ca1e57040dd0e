"""Every device-dependent decision of a run, made once from facts about the devices: DevicePlan.

A run reads its machine's facts (`read_facts`: nvidia-smi, TensorFlow's physical device list,
/proc) before any framework starts its devices, and `make_device_plan(facts, request,
footprint)`, a pure function, decides from them and the settings that matter (`PlanRequest`):
the strategy and replicas, the per-replica batch, the precision and why, XLA, the collective
implementation, the environment variables the run sets before a framework starts, the steps a
compiled call may pack, the export's platforms, and the memory of a step against the device's.
`python -m trainer.plan` feeds it the facts of a machine you are not on (`assumed_facts`), so
the unit tests and a user read the plan of any GPU machine without one. A setting the machine
cannot run is refused here, as a UserError of one line.

What the backends decide alike is decided here once; where they differ (whether they can use
the GPUs, auto's strategy on one device, XLA, CPU precision, the settings refused on GPUs, the
environment their framework reads, the all-reduce between CPU devices, packs), the backend's
device rules say: trainer/backends/tensorflow/device_rules.py and trainer/backends/jax/
device_rules.py, each a backends/interface.DeviceRules. auto's choices are those the runtimes
make (distribution.make_strategy, backends/jax/runtime, precision.resolve_precision), so a run
planned here trains as before.
"""

import dataclasses
import importlib.util
import os
import subprocess
import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import tensorflow as tf

from trainer import config as config_lib
from trainer import errors
from trainer.backends import interface
from trainer.distribute import distribution
from trainer.distribute import gpu_specs
from trainer.distribute import hardware
from trainer.distribute import memory_estimate
from trainer.distribute import plan_inputs
from trainer.distribute import precision as precision_lib

# A pack of steps is stacked on the host and copied to the devices whole, and tf.data prefetches
# the next: bounding a pack's bytes bounds the host memory it takes and the copy the devices
# wait for between calls.
PACK_HOST_BYTES = 512 * 2**20
# nvidia-smi's compute capability per GPU (driver 510 and newer); a query of its own, so an
# older driver that refuses the field still answers hardware.NVIDIA_SMI_QUERY.
NVIDIA_SMI_CAPABILITY_QUERY = ("--query-gpu=pci.bus_id,compute_cap", "--format=csv,noheader")
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")


# The plan's inputs, named here too: its callers read one module.
DeviceFacts = plan_inputs.DeviceFacts
PlanRequest = plan_inputs.PlanRequest


@dataclasses.dataclass(frozen=True)
class DevicePlan:
  """What a run does on its devices; logged at start and followed, never re-decided."""

  backend: str
  platform: str  # Where the replicas run: "gpu" or "cpu".
  devices: str  # e.g. "2 workers x 4 GPUs (NVIDIA A100-SXM4-40GB)".
  strategy: str  # auto resolved.
  num_replicas: int
  per_replica_batch: int
  precision: str  # The Keras dtype policy, auto resolved.
  precision_reason: str
  xla: bool  # The train step compiled by XLA.
  collective: str  # The all-reduce: NCCL, RING, gloo, in-process (JAX's host devices), none.
  environment: Mapping[str, str]  # Each variable the run sets before a framework starts.
  pack_steps: int  # The most steps one compiled call may run (schedule.pack_size's max_pack).
  export_platforms: Tuple[str, ...]  # Where the exported SavedModel runs.
  memory: memory_estimate.MemoryEstimate
  notes: Tuple[str, ...] = ()  # What a user should know of the choices: idle GPUs, memory.

  def as_dict(self) -> dict:
    """The plan as `trainer.plan --json` writes it and a run logs it."""
    fields = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
    return {**fields, "environment": dict(self.environment), "memory": self.memory.as_dict(),
            "export_platforms": list(self.export_platforms), "notes": list(self.notes)}


# ---------------------------------------------------------------- The plan.
def make_device_plan(facts: DeviceFacts, request: PlanRequest,
                     footprint: memory_estimate.ModelFootprint) -> DevicePlan:
  """The plan of `request` on a worker of `facts` for a model of `footprint`; a UserError of
  one line for a setting these devices cannot run. What the backends decide alike is decided
  here; where they differ, the backend's device rules (backends/interface.DeviceRules) say."""
  backend, notes = request.backend, []
  rules = interface.device_rules(backend)
  environment = {"KERAS_BACKEND": backend}
  usable = facts.gpus if rules.can_use_gpus(facts) else 0
  if facts.gpus and not usable:
    notes.append(f"{errors.plural(facts.gpus, 'GPU')} here, but {rules.cuda_missing}: "
                 "it trains on the CPU.")
  on_gpu = usable > 0
  is_cluster = request.strategy == "multi_worker_mirrored"
  workers = facts.workers if is_cluster else 1
  gpus_per_worker = usable
  shared = on_gpu and is_cluster and facts.gpus_shared and facts.workers_per_host > 1
  if shared and usable >= facts.workers_per_host:
    # NCCL refuses one GPU in two ranks of a communicator: each worker takes GPUs of its own.
    gpus_per_worker, shared = usable // facts.workers_per_host, False
    first = facts.host_worker_index * gpus_per_worker
    ids = facts.gpu_ids or tuple(str(index) for index in range(usable))
    environment["CUDA_VISIBLE_DEVICES"] = ",".join(ids[first:first + gpus_per_worker])
    if usable % facts.workers_per_host:
      notes.append(f"{errors.plural(usable % facts.workers_per_host, 'GPU')} of the host's "
                   f"{usable} left idle: {facts.workers_per_host} workers take "
                   f"{gpus_per_worker} each.")
  if shared:
    rules.check_gpus_shared(facts.workers_per_host, usable)
  local_devices = gpus_per_worker if on_gpu else request.cpu_devices
  strategy = _strategy(rules, request.strategy, local_devices, on_gpu)
  num_replicas = {"default": 1, "one_device": 1, "mirrored": local_devices,
                  "multi_worker_mirrored": local_devices * workers}[strategy]
  distribution.check_batch_size(request.batch_size, num_replicas, request.grad_accum_steps)
  xla = rules.compiles_with_xla(request, num_replicas)
  precision, reason = _precision(rules, facts, request, on_gpu)
  if on_gpu:
    rules.check_on_gpus(request, footprint, xla, num_replicas)
  environment.update(rules.environment(request, on_gpu, local_devices))
  device_bytes = _device_memory(facts, on_gpu, local_devices)
  memory = memory_estimate.estimate(
      footprint, request.batch_size // num_replicas, precision, request.optimizer,
      request.momentum, bool(request.ema_decay), request.grad_accum_steps, on_gpu, device_bytes)
  if memory.fits is False:
    notes.append(f"A step needs about {memory.per_device_bytes / 2**30:.1f} GiB a device, more "
                 f"than its {device_bytes / 2**30:.1f} GiB: lower --batch_size, or use "
                 "--grad_accum_steps or mixed precision.")
  return DevicePlan(
      backend=backend, platform="gpu" if on_gpu else "cpu",
      devices=_describe(facts, on_gpu, local_devices, workers), strategy=strategy,
      num_replicas=num_replicas, per_replica_batch=request.batch_size // num_replicas,
      precision=precision, precision_reason=reason, xla=xla,
      collective=_collective(rules, on_gpu, num_replicas, workers, shared),
      environment=environment,
      pack_steps=_pack_steps(rules, request, footprint, on_gpu, xla, num_replicas, strategy,
                             workers),
      # JAX lowers for every platform named, on any machine: a CPU run's export serves GPUs too.
      export_platforms=("cpu", "cuda"),
      memory=memory, notes=tuple(notes))


def _strategy(rules: interface.DeviceRules, requested: str, local_devices: int,
              on_gpu: bool) -> str:
  """auto as each runtime resolves it: mirrored over several devices; on one, the backend's
  choice."""
  if requested != "auto":
    return requested
  if local_devices > 1:
    return "mirrored"
  return rules.one_device_strategy(on_gpu)


def _precision(rules: interface.DeviceRules, facts: DeviceFacts, request: PlanRequest,
               on_gpu: bool) -> Tuple[str, str]:
  """auto on GPUs by the oldest GPU's compute capability, whatever the backend; on CPUs the
  backend's rule."""
  if request.precision != "auto":
    return request.precision, "asked for with --precision"
  if on_gpu:
    return precision_lib.gpu_precision([facts.compute_capability or (0, 0)])
  return rules.cpu_precision(facts, request)


def _collective(rules: interface.DeviceRules, on_gpu: bool, num_replicas: int, workers: int,
                shared: bool) -> str:
  """The all-reduce's implementation: NCCL between GPUs (RING where workers share a GPU, which
  NCCL refuses), the backend's own between CPU devices."""
  if num_replicas == 1:
    return "none"
  if on_gpu:
    return "RING" if shared else "NCCL"
  return rules.cpu_collective(workers)


def _pack_steps(rules: interface.DeviceRules, request: PlanRequest,
                footprint: memory_estimate.ModelFootprint, on_gpu: bool, xla: bool,
                num_replicas: int, strategy: str, workers: int) -> int:
  """The most steps one compiled call runs: the backend's limit, bounded by PACK_HOST_BYTES."""
  # A worker stacks its own part of each global batch, as float32.
  batch_bytes = 4 * footprint.input_per_example * (request.batch_size // workers)
  limit = rules.pack_limit(footprint, on_gpu, xla, num_replicas, strategy, batch_bytes)
  return max(1, min(limit, PACK_HOST_BYTES // max(1, batch_bytes)))


def _device_memory(facts: DeviceFacts, on_gpu: bool, local_devices: int) -> Optional[int]:
  """A replica's memory: its GPU's, or on CPUs its share of the host's."""
  if on_gpu:
    return facts.gpu_memory_bytes
  if facts.host_memory_bytes is None:
    return None
  return facts.host_memory_bytes // (local_devices * facts.workers_per_host)


def _describe(facts: DeviceFacts, on_gpu: bool, local_devices: int, workers: int) -> str:
  cluster = f"{workers} workers x " if workers > 1 else ""
  if on_gpu:
    capability = ".".join(map(str, facts.compute_capability or ("?",)))
    memory = (f", {facts.gpu_memory_bytes / 2**30:.0f} GiB" if facts.gpu_memory_bytes else "")
    return (f"{cluster}{errors.plural(local_devices, 'GPU')} ({facts.gpu_name or 'GPU'}, "
            f"compute capability {capability}{memory})")
  split = f" as {local_devices} devices" if local_devices > 1 else ""
  return f"{cluster}CPU ({facts.cpu_name}){split}"


# ---------------------------------------------------------------- A run's plan.
LOG_HEADING = "Device plan (python -m trainer.plan prints it for any machine):"


def plan_run(config: config_lib.Config, facts: Optional[DeviceFacts] = None) -> DevicePlan:
  """The plan of the run `config` describes on a worker of `facts` (this machine's, read as the
  run reads them, when None): the data's shape from its headers (data/metadata), the model's
  footprint built with shapes only. Starts no device, so the plan's environment can still be
  applied (`apply_environment`)."""
  from trainer.data import metadata  # pylint: disable=g-import-not-at-top
  if facts is None:
    facts = this_workers_facts(config.runtime)
  image_shape, num_classes = metadata.image_shape_and_classes(config.data)
  if config_lib.brings_its_own_api(config.model.name):
    footprint = _own_footprint(config.model, image_shape, num_classes)
  else:  # Functional: its graph of layers gives the activations, whatever --api builds.
    footprint = memory_estimate.built_in_footprint(config.model.name, image_shape, num_classes,
                                                   config.model.hidden_units)
  return make_device_plan(facts, PlanRequest.from_config(config), footprint)


def _own_footprint(model: config_lib.ModelConfig, image_shape, num_classes: int
                   ) -> memory_estimate.ModelFootprint:
  """The footprint of the user's model or an application, from its function alone: its seed
  and its check on a batch (own_model.build) would run a computation, which starts a device."""
  from trainer.models import applications  # pylint: disable=g-import-not-at-top
  from trainer.models import own_model  # pylint: disable=g-import-not-at-top
  function = (applications.load_function(model.name) if model.application
              else own_model.load_function(model.name))
  try:
    return memory_estimate.footprint_of(lambda: function.function(
        input_shape=tuple(image_shape), num_classes=num_classes))
  except errors.UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # The user's code: any error at all.
    raise errors.UserError(f"--model={model.name} raised {type(e).__name__}: {e}") from None


def this_workers_facts(runtime: config_lib.RuntimeConfig) -> DeviceFacts:
  """This machine's facts for this worker of the cluster that --worker_hosts or TF_CONFIG
  describe (under multi_worker_mirrored)."""
  if runtime.strategy != "multi_worker_mirrored":
    return read_facts()
  from trainer.distribute import cluster  # pylint: disable=g-import-not-at-top
  tf_config = cluster.tf_config_from_environment(runtime.worker_hosts, runtime.task_index)
  return read_facts(cluster.worker_addresses(tf_config), cluster.input_position(tf_config)[0])


def apply_environment(environment: Mapping[str, str]) -> None:
  """Sets the plan's variables for TensorFlow and JAX to read as they start their devices (XLA
  flags merged into the user's own). KERAS_BACKEND is keras_backend.select's. In a process whose
  devices have started (a notebook, the tests) a variable that would change is left, with a
  warning: the devices run as they started."""
  started = devices_started()
  for name, value in environment.items():
    if name == "KERAS_BACKEND":
      continue
    wanted = (_merged_xla_flags(os.environ.get(name, ""), value) if name == "XLA_FLAGS"
              else value)
    if os.environ.get(name) == wanted:
      continue
    if started:
      logging.warning("The device plan sets %s=%s, but this process started its devices "
                      "before: they keep their settings. Run the trainer in a process of its "
                      "own.", name, value)
      continue
    os.environ[name] = wanted


def check_replicas(started: int, plan: DevicePlan) -> None:
  """Stops a run whose devices are not those its plan counted (a framework that started its
  devices before the plan's environment was set): the batch split and precision assume them.
  Both runtimes call it once their devices are up."""
  if started != plan.num_replicas:
    raise errors.UserError(
        f"The device plan counted {errors.plural(plan.num_replicas, 'replica')} ({plan.devices}),"
        f" but {started} started: this process set up its devices before the plan. Run the "
        "trainer in a process of its own.")


def devices_started() -> bool:
  """Whether TensorFlow's context or a JAX backend exists in this process."""
  from tensorflow.python.eager import context  # pylint: disable=g-import-not-at-top
  if context.context()._context_handle is not None:  # pylint: disable=protected-access
    return True
  bridge = sys.modules.get("jax._src.xla_bridge")
  return bool(bridge is not None and getattr(bridge, "_backends", None))


def _merged_xla_flags(current: str, planned: str) -> str:
  """`current` XLA_FLAGS with the planned flags set, each replacing its own earlier value."""
  names = {flag.split("=", 1)[0] for flag in planned.split()}
  kept = [flag for flag in current.split() if flag.split("=", 1)[0] not in names]
  return " ".join(kept + planned.split())


def describe(plan: DevicePlan) -> List[str]:
  """The plan in a few lines, as a run logs it at start and `trainer.plan` prints it."""
  memory = plan.memory
  parts = ", ".join(f"{name.replace('_', ' ')} {_size(value)}"
                    for name, value in memory.as_dict()["parts"].items())
  against = ("" if memory.device_bytes is None else
             f" of {_size(memory.device_bytes)}: {'fits' if memory.fits else 'does not fit'}")
  environment = " ".join(f"{name}={value}" for name, value in sorted(plan.environment.items()))
  return [
      f"{plan.backend} on {plan.devices}: strategy {plan.strategy}, "
      f"{errors.plural(plan.num_replicas, 'replica')} of {plan.per_replica_batch} examples",
      f"  precision {plan.precision} ({plan.precision_reason})",
      f"  XLA {'on' if plan.xla else 'off'}, up to {errors.plural(plan.pack_steps, 'step')} a "
      f"compiled call; all-reduce {plan.collective}; exported for "
      f"{', '.join(platform.upper() for platform in plan.export_platforms)}",
      f"  environment: {environment}",
      f"  memory a device: {_size(memory.per_device_bytes)} ({parts}){against}",
      *(f"  note: {note}" for note in plan.notes)]


def _size(count: Optional[int]) -> str:
  for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if count >= size:
      return f"{count / size:.1f} {unit}"
  return f"{count} B"


# ---------------------------------------------------------------- Facts.
def assumed_facts(gpus_per_worker: int = 0, workers: int = 1,
                  compute_capability: Optional[Tuple[int, int]] = None,
                  gpu_memory_gb: Optional[float] = None, gpu: Optional[str] = None,
                  cpu_bfloat16: Optional[str] = None,
                  host_memory_gb: Optional[float] = None) -> DeviceFacts:
  """The facts of a machine you are not on, as `trainer.plan` takes them: `gpu` names one of
  gpu_specs.GPUS (its capability and memory, unless given too); memory in GiB as cards are
  sold. Every worker on a host of its own, with both frameworks able to use the GPUs."""
  name = ""
  if gpu:
    spec = gpu_specs.find(gpu)
    name = spec.name
    compute_capability = compute_capability or spec.compute_capability
    gpu_memory_gb = gpu_memory_gb or spec.memory_gib
  if gpus_per_worker and gpu is None and compute_capability is None:
    raise errors.UserError(f"--gpus_per_worker={gpus_per_worker} needs the GPU: --gpu=NAME "
                           "or --compute_capability=X.Y (with --gpu_memory_gb=G).")
  return DeviceFacts(
      gpus=gpus_per_worker, gpu_name=name, compute_capability=compute_capability,
      gpu_memory_bytes=int(gpu_memory_gb * 2**30) if gpu_memory_gb else None,
      gpu_ids=tuple(str(index) for index in range(gpus_per_worker)),
      cpu_bfloat16=cpu_bfloat16, workers=workers,
      host_memory_bytes=int(host_memory_gb * 2**30) if host_memory_gb else None)


def read_facts(worker_addresses: Sequence[str] = (), task_index: int = 0) -> DeviceFacts:
  """This machine's facts, for a worker at `task_index` of `worker_addresses` (the cluster's,
  "host:port" each; none on one host). Reads nvidia-smi, TensorFlow's physical device list and
  /proc, none of which starts a device, so JAX's and TensorFlow's environment can still be set
  from the plan. Workers of one host are taken to share its GPUs unless CUDA_VISIBLE_DEVICES
  gives each its own (as scripts/launch_local.py --gpus_per_worker does)."""
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  gpus = visible_gpus(hardware.parse_nvidia_smi(_nvidia_smi(hardware.NVIDIA_SMI_QUERY)),
                      parse_compute_capabilities(_nvidia_smi(NVIDIA_SMI_CAPABILITY_QUERY)),
                      visible)
  # TensorFlow's device list starts CUDA, which reads CUDA_VISIBLE_DEVICES once for the
  # process: asked only where nvidia-smi is not, so the plan can still give each worker its GPUs.
  tensorflow_cuda = tf.test.is_built_with_cuda()
  if not gpus and tensorflow_cuda and hardware.gpus():  # No nvidia-smi: TensorFlow's list.
    gpus = [{"id": str(index), "name": "", "compute_capability": tuple(capability),
             "memory_mib": None}
            for index, capability in enumerate(hardware.gpu_compute_capabilities())]
  capabilities = [gpu["compute_capability"] for gpu in gpus if gpu["compute_capability"]]
  memories = [gpu["memory_mib"] for gpu in gpus]
  workers_per_host, host_index = host_position(worker_addresses, task_index)
  return DeviceFacts(
      gpus=len(gpus), gpu_name=gpus[0]["name"] if gpus else "",
      compute_capability=min(capabilities) if capabilities else None,
      gpu_memory_bytes=(min(memories) * 2**20 if memories and None not in memories else None),
      gpu_ids=tuple(gpu["id"] for gpu in gpus), tensorflow_cuda=tensorflow_cuda,
      jax_cuda=any(importlib.util.find_spec(name) is not None
                   for name in ("jax_cuda12_plugin", "jax_cuda13_plugin")),
      cpu_name=hardware.cpu_model(), cpu_bfloat16=hardware.cpu_bfloat16(),
      host_memory_bytes=_host_memory(), workers=max(1, len(worker_addresses)),
      workers_per_host=workers_per_host, host_worker_index=host_index,
      gpus_shared=workers_per_host > 1 and visible is None)


def parse_compute_capabilities(listing: str) -> Dict[str, Tuple[int, int]]:
  """NVIDIA_SMI_CAPABILITY_QUERY's output as bus id -> (major, minor); lines without both
  (a driver that does not know the field, "[N/A]") are skipped."""
  found = {}
  for line in listing.splitlines():
    fields = [field.strip() for field in line.split(",")]
    bus_id = hardware.normalize_bus_id(fields[0]) if len(fields) == 2 else None
    major, _, minor = fields[-1].partition(".")
    if bus_id and major.isdigit() and minor.isdigit():
      found[bus_id] = (int(major), int(minor))
  return found


def visible_gpus(nvidia_smi: Dict[str, dict], capabilities: Dict[str, Tuple[int, int]],
                 cuda_visible_devices: Optional[str]) -> List[dict]:
  """The GPUs a process may use, in bus order: nvidia-smi's (`hardware.parse_nvidia_smi`'s,
  with `capabilities` by bus id) that CUDA_VISIBLE_DEVICES lets through. Its entries are
  indices in bus order (CUDA's own order on a host of one GPU model) or UUIDs (a prefix is
  enough); "" or "-1" hides every GPU. Each as {id (as CUDA_VISIBLE_DEVICES names it), name,
  compute_capability, memory_mib}; a MIG slice's memory is unknown."""
  every = []
  for index, bus_id in enumerate(sorted(nvidia_smi)):
    gpu = nvidia_smi[bus_id]
    every.append({"id": str(index), "uuid": gpu["uuid"] or "", "name": gpu["name"],
                  "compute_capability": capabilities.get(bus_id),
                  "memory_mib": None if gpu["mig"] else gpu["memory_mib"]})
  if cuda_visible_devices is None:
    return [_without_uuid(gpu) for gpu in every]
  chosen = []
  for entry in (part.strip() for part in cuda_visible_devices.split(",")):
    # CUDA stops at the first entry it cannot resolve.
    if entry.isdigit() and int(entry) < len(every):
      match = every[int(entry)]
    else:
      match = next((gpu for gpu in every if entry and gpu["uuid"].startswith(entry)), None)
    if match is None:
      break
    chosen.append({**_without_uuid(match), "id": entry})
  return chosen


def _without_uuid(gpu: dict) -> dict:
  return {key: value for key, value in gpu.items() if key != "uuid"}


def host_position(worker_addresses: Sequence[str], task_index: int) -> Tuple[int, int]:
  """(workers on the host of worker `task_index`, its place among them) in `worker_addresses`
  ("host:port" each); loopback names count as one host. (1, 0) without a cluster."""
  if not worker_addresses:
    return 1, 0
  hosts = [_host(address) for address in worker_addresses]
  mine = hosts[task_index]
  return hosts.count(mine), hosts[:task_index].count(mine)


def host_count(worker_addresses: Sequence[str]) -> int:
  """How many machines `worker_addresses` ("host:port" each) name, loopback names as one; 1
  without a cluster."""
  return len({_host(address) for address in worker_addresses}) or 1


def _host(address: str) -> str:
  host = address.rsplit(":", 1)[0] if address.count(":") == 1 or "]" in address else address
  return "localhost" if host in _LOOPBACK or host.startswith("127.") else host


def parse_meminfo(text: str) -> Optional[int]:
  """/proc/meminfo's MemTotal in bytes; None without it."""
  for line in text.splitlines():
    name, _, value = line.partition(":")
    if name == "MemTotal" and value.split() and value.split()[0].isdigit():
      return int(value.split()[0]) * 1024
  return None


def _host_memory() -> Optional[int]:
  try:
    with open("/proc/meminfo") as f:
      return parse_meminfo(f.read())
  except OSError:
    return None


def _nvidia_smi(query: Sequence[str]) -> str:
  """nvidia-smi's answer to `query`; "" where it does not run (no driver, no GPU)."""
  try:
    return subprocess.run(["nvidia-smi", *query], capture_output=True, text=True, timeout=30,
                          check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return ""
