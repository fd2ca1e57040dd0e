"""Model FLOPs utilisation: the share of the hardware's peak a run's steps used.

  mfu = training FLOPs per step x productive steps / productive seconds
        / (peak FLOP/s per device x devices)

The productive steps and seconds are goodput's (trainer.records.goodput): steps kept, step time
without compiling or input wait, so MFU says how well the steps used the hardware while they
ran, and goodput where the rest of the time went.

The peak is an argument with its source (`device_peak` finds it): a GPU's datasheet dense peak
at the run's precision (trainer.distribute.gpu_specs), or, on CPUs, which have no such figure
that a framework reaches, the matmul ceiling measured on this machine
(trainer.bench.ceiling.matmul_ceiling: the best rate of a large square matmul, with and without
XLA). A measured ceiling is not a datasheet peak, so CPU and GPU MFU are not the same measure;
`peak_source` says which it is. The ceiling takes seconds to measure, so it is measured once per
machine and kept in the user's cache folder (`cpu_peak`).
"""

import dataclasses
import datetime
import hashlib
import json
import os
import tempfile
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence

from absl import logging

CACHE_FOLDER_NAME = "keras-distributed-trainer"
# The Keras dtype policies (config.PRECISIONS resolved) and the dtype their matmuls run in.
COMPUTE_DTYPES = {"float32": "float32", "mixed_float16": "float16",
                  "mixed_bfloat16": "bfloat16"}


@dataclasses.dataclass(frozen=True)
class Peak:
  """A device's peak FLOP/s at the run's precision, and where the figure comes from (or, with
  no figure, why there is none)."""

  flops_per_device: Optional[float]
  source: str
  # A CPU's measured ceiling is its whole machine's (its matmuls use every core), so a run's
  # devices are its machines there, not its logical CPU devices.
  per_machine: bool = False

  @property
  def named(self) -> str:
    """The source without its details (the parenthesis): what a summary line says."""
    return self.source.split(" (", 1)[0]


def mfu(flops_per_step: Optional[float], steps: int, productive_s: float, peak: Peak,
        devices: int) -> Dict[str, Optional[float]]:
  """results.json's `mfu` (None where no step was kept, or the FLOPs or the peak are unknown),
  `peak_flops` (of all `devices`; None when unknown) and `peak_source`.

  `devices` are what the peak is of: GPUs, or machines for a CPU's ceiling (Peak.per_machine).
  """
  peak_flops = peak.flops_per_device * devices if peak.flops_per_device else None
  utilisation = (flops_per_step * steps / productive_s / peak_flops
                 if flops_per_step and steps and productive_s > 0 and peak_flops else None)
  return {"mfu": utilisation, "peak_flops": peak_flops, "peak_source": peak.source}


def device_peak(precision: str, gpu_names: Sequence[str],
                cpu: Optional[Callable[[str], Peak]] = None) -> Peak:
  """The peak of one of the run's devices at `precision` (the Keras dtype policy): its GPUs'
  datasheet dense peak (trainer.distribute.gpu_specs) where it runs on `gpu_names`, else
  `cpu(precision)`, the CPU's measured ceiling. GPUs the table does not hold, or of several
  kinds, have no peak: Peak(None, why)."""
  if not gpu_names:
    return (cpu or cpu_peak)(precision)
  from trainer.distribute import gpu_specs  # pylint: disable=g-import-not-at-top
  kinds = sorted(set(gpu_names))
  if len(kinds) > 1:
    return Peak(None, f"no one peak: the run's GPUs are of {len(kinds)} kinds "
                      f"({', '.join(kinds)}); MFU left out")
  spec = gpu_specs.identify(kinds[0])
  if spec is None:
    return Peak(None, f"no datasheet peak for {kinds[0]} in trainer/distribute/gpu_specs.py "
                      "(a row there with its dense peaks gives MFU); MFU left out")
  return Peak(gpu_specs.peak_flops(spec, precision),
              f"datasheet dense peak of the {spec.name} at {precision} ({spec.source})")


def cache_folder(environ: Mapping[str, str] = os.environ) -> str:
  """The user's cache folder of this harness: $XDG_CACHE_HOME's, else ~/.cache's."""
  base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, CACHE_FOLDER_NAME)


def cpu_peak(precision: str, measure: Optional[Callable[[str], dict]] = None,
             folder: Optional[str] = None, cpu: Optional[str] = None,
             flags: Optional[Iterable[str]] = None, cores: Optional[int] = None) -> Peak:
  """This machine's measured matmul ceiling at `precision` (a COMPUTE_DTYPES key), from the
  cache when this CPU was measured before, else measured with `measure(dtype)` (a
  matmul_ceiling result) and cached.

  The cache is keyed by the CPU's model, its flags, the cores this process may use and the
  dtype: the same model in a VM of fewer cores, or with AVX-512 hidden, has another ceiling.
  A cache that cannot be read is measured again; one that cannot be written is only warned of.
  """
  dtype = COMPUTE_DTYPES[precision]
  if cpu is None or flags is None:
    from trainer.distribute import hardware  # pylint: disable=g-import-not-at-top
    cpu = hardware.cpu_model() if cpu is None else cpu
    flags = hardware.cpu_flags() if flags is None else flags
  cores = len(os.sched_getaffinity(0)) if cores is None else cores
  machine = {"cpu": cpu, "cores": cores, "dtype": dtype,
             "flags_sha256": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()}
  key = hashlib.sha256(json.dumps(machine, sort_keys=True).encode()).hexdigest()[:16]
  path = os.path.join(folder or cache_folder(), f"cpu_peak-{key}.json")
  entry = _read_entry(path, machine)
  if entry is None:
    logging.info("Measuring this CPU's %s matmul ceiling for MFU, once (kept in %s).", dtype,
                 path)
    ceiling = (measure or _measure_matmul_ceiling)(dtype)
    entry = {**machine, "flops_per_sec": ceiling["flops_per_sec"], "shape": ceiling["best"],
             "measured": datetime.date.today().isoformat()}
    _write_entry(path, entry)
  return Peak(entry["flops_per_sec"],
              f"measured {dtype} matmul ceiling of this CPU ({entry['shape']}, "
              f"{cores} cores, {entry['measured']}; {path})", per_machine=True)


def _measure_matmul_ceiling(dtype: str) -> dict:
  from trainer.bench import ceiling  # pylint: disable=g-import-not-at-top
  return ceiling.matmul_ceiling(tiny=False, dtype=dtype, quick=True)


def _read_entry(path: str, machine: Mapping[str, object]) -> Optional[dict]:
  """The cached entry at `path` if it is whole and of `machine`, else None."""
  try:
    with open(path) as f:
      entry = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    logging.warning("%s cannot be read (%s); measuring the CPU's ceiling again.", path, e)
    return None
  if (not isinstance(entry, dict) or any(entry.get(name) != value
                                         for name, value in machine.items())
      or not isinstance(entry.get("flops_per_sec"), (int, float))):
    return None
  return entry


def _write_entry(path: str, entry: Mapping[str, object]) -> None:
  """Writes `entry` through a rename of a file of this process's own, so two processes that
  measure at once never mix their writes."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
      with os.fdopen(descriptor, "w") as f:
        json.dump(entry, f, indent=2, sort_keys=True)
        f.write("\n")
      os.replace(temporary, path)
    except BaseException:
      os.remove(temporary)
      raise
  except OSError as e:
    logging.warning("The CPU's ceiling could not be kept in %s (%s); it will be measured again "
                    "next run.", path, e)
