"""What the run executes on: accelerators found, a one-line device description, CPU splitting."""

import os
import platform
import re
import subprocess
from typing import Dict, List, Optional, Sequence, Set

from absl import logging
import tensorflow as tf

from trainer import errors


def split_cpu(num_devices: int, share_threads: bool = True) -> None:
  """Splits the host CPU into `num_devices` logical devices, so mirrored runs that many replicas,
  each with its share of the cores as intra-op threads (unless not `share_threads`).

  Must run before TensorFlow initialises its devices, i.e. before any op executes.
  """
  if num_devices < 1:
    raise errors.UserError(f"--cpu_devices={num_devices}: must be at least 1.")
  cpu = tf.config.list_physical_devices("CPU")[0]
  configured = tf.config.get_logical_device_configuration(cpu)
  if num_devices == 1:
    _warn_of_an_earlier_runs_threads(len(configured or ()))
    return
  if configured and len(configured) == num_devices:
    # The process split the CPU itself before the run (a test session, a notebook): its
    # threads stay the process's, as once TensorFlow has started. Sharing them here would fix
    # them at a device's share for every later run in the process, whose numerics (even under
    # --deterministic) would then differ from the same run's in a process of its own.
    return
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    # The devices' ops run at once, each on the one intra-op pool: with a thread per core for
    # each, they oversubscribe the cores, so each gets its share (docs/measurements.md).
    if share_threads:
      tf.config.threading.set_intra_op_parallelism_threads(
          max(1, (os.cpu_count() or 1) // num_devices))
  except RuntimeError:
    # Already initialised (a second run in one process): fine if it matches.
    if len(tf.config.list_logical_devices("CPU")) != num_devices:
      raise errors.UserError(
          f"--cpu_devices={num_devices} cannot be applied: TensorFlow already runs with "
          f"{len(tf.config.list_logical_devices('CPU'))} CPU devices in this process.") from None


def _warn_of_an_earlier_runs_threads(split: int) -> None:
  """One device, in a process whose CPU an earlier run split into `split` devices and whose
  threads it shared out (a notebook's second run): TensorFlow keeps them for the process, so
  this run trains on fewer threads than the same command in a process of its own, slower and,
  under --deterministic too, to other weights. Said, since it cannot be undone here."""
  threads = tf.config.threading.get_intra_op_parallelism_threads()
  cores = os.cpu_count() or 1
  if split > 1 and threads == max(1, cores // split) < cores:
    logging.warning("This process's TensorFlow runs %d intra-op thread%s of %d cores, as an "
                    "earlier run in it with --cpu_devices=%d left it: this run is slower, and "
                    "its weights differ from the same command's in a process of its own. Run "
                    "it in a new process (in a notebook, restart the kernel).", threads,
                    "" if threads == 1 else "s", cores, split)


def configure_gpu_memory(growth: bool, devices: Optional[Sequence] = None) -> None:
  """Memory growth on every GPU (`devices`, default every GPU TensorFlow sees) when `growth`:
  each process then takes memory as it needs it, instead of all of every GPU it sees. Must run
  before anything touches a GPU; a process whose GPUs are already in use keeps what it has."""
  for gpu in gpus() if devices is None else devices:
    try:
      tf.config.experimental.set_memory_growth(gpu, growth)
    except RuntimeError:  # Already initialised (a test process, a second run in one process).
      if tf.config.experimental.get_memory_growth(gpu) != growth:
        raise errors.UserError(
            f"--{'' if growth else 'no'}gpu_memory_growth cannot be applied: TensorFlow already "
            f"uses {gpu.name} in this process with memory growth "
            f"{'off' if growth else 'on'}.") from None


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


# nvidia-smi's query of every GPU; pairs with TensorFlow's GPUs by PCI bus id.
NVIDIA_SMI_QUERY = ("--query-gpu=pci.bus_id,uuid,name,memory.total,mig.mode.current",
                    "--format=csv,noheader,nounits")
_BUS_ID = re.compile(r"(?:pci bus id: )?([0-9a-fA-F]+):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])")


def normalize_bus_id(text: str) -> Optional[str]:
  """A PCI bus id as "0000:07:00.0" whether written with nvidia-smi's 8-digit domain
  ("00000000:07:00.0") or TensorFlow's 4-digit one; None if `text` holds none."""
  match = _BUS_ID.search(text)
  if not match:
    return None
  domain, bus, device, function = match.groups()
  return f"{int(domain, 16):04x}:{bus.lower()}:{device.lower()}.{function}"


def parse_nvidia_smi(listing: str) -> Dict[str, dict]:
  """nvidia-smi's NVIDIA_SMI_QUERY output as bus id -> {uuid, name, memory_mib, mig}. Lines that
  are not a GPU's (a warning printed first) are skipped; a field nvidia-smi cannot read
  ("[N/A]", "[Not Supported]") is None for that GPU only."""
  found = {}
  for line in listing.splitlines():
    fields = [field.strip() for field in line.split(",")]
    bus_id = normalize_bus_id(fields[0]) if len(fields) == 5 else None
    if bus_id is None:
      continue
    _, uuid, name, memory, mig = fields
    found[bus_id] = {"uuid": uuid, "name": name,
                     "memory_mib": int(memory) if memory.isdigit() else None,
                     "mig": mig == "Enabled"}
  return found


def describe_gpus_from(tensorflow_descriptions: Sequence[str],
                       nvidia_smi: Dict[str, dict]) -> List[dict]:
  """Every GPU TensorFlow sees, in its order: name, compute capability, memory (MiB), PCI bus id
  and whether it is a MIG slice. `tensorflow_descriptions` are TensorFlow's physical device
  descriptions ("device: 0, name: NVIDIA A100-SXM4-40GB, pci bus id: 0000:07:00.0, compute
  capability: 8.0"); `nvidia_smi` is `parse_nvidia_smi`'s.

  Paired by bus id, not by index: TensorFlow numbers only the GPUs CUDA_VISIBLE_DEVICES lets it
  see, in CUDA's order (fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID), while nvidia-smi
  numbers every GPU of the machine by bus. A MIG slice is shown as such: it shares its GPU's
  bus id, and the GPU's memory is not the slice's, so its memory is left unknown.
  """
  described = []
  for description in tensorflow_descriptions:
    facts = dict(field.split(": ", 1) for field in description.split(", ") if ": " in field)
    bus_id = normalize_bus_id(facts.get("pci bus id", ""))
    smi = nvidia_smi.get(bus_id, {})
    name = facts.get("name", smi.get("name", "unknown"))
    mig = smi.get("mig", False) or " MIG " in f" {name} "
    capability = facts.get("compute capability", "")
    described.append({
        "name": name, "bus_id": bus_id, "uuid": smi.get("uuid"), "mig": mig,
        "compute_capability": [int(part) for part in capability.split(".") if part.isdigit()],
        "memory_mib": None if mig else smi.get("memory_mib")})
  return described


def describe_gpus() -> List[dict]:
  """Every GPU TensorFlow sees (describe_gpus_from), with nvidia-smi's facts where it runs."""
  if not gpus():
    return []
  from tensorflow.python.client import device_lib  # pylint: disable=g-import-not-at-top
  descriptions = [device.physical_device_desc for device in device_lib.list_local_devices()
                  if device.device_type == "GPU"]
  try:
    listing = subprocess.run(["nvidia-smi", *NVIDIA_SMI_QUERY], capture_output=True, text=True,
                             timeout=30, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    listing = ""
  return describe_gpus_from(descriptions, parse_nvidia_smi(listing))


def describe_devices() -> str:
  """Returns e.g. "GPU: NVIDIA H100 x8" or "CPU: AMD EPYC x2 cores"."""
  found = gpus()
  if found:
    name = tf.config.experimental.get_device_details(found[0]).get("device_name", "unknown")
    return f"GPU: {name} x{len(found)}"
  return f"CPU: {cpu_model()} x{os.cpu_count()} cores"
