"""Named GPUs: compute capability, memory as sold and dense peak FLOP/s per precision.

One table, read by `trainer.plan --gpu=NAME` (a machine you are not on) and by the goodput
figures (model FLOP/s utilisation against the peak). Every figure is the vendor's datasheet's
(named in `source`); where a datasheet gives Tensor Core figures "with sparsity" only, the dense
figure is half of it, as the datasheets' footnotes state. Peaks are per GPU, in FLOP/s.
"""

import dataclasses
import difflib
import re
from typing import Mapping, Optional, Tuple

from trainer import errors

TERA = 1e12


@dataclasses.dataclass(frozen=True)
class GpuSpec:
  """One GPU model as its datasheet states it."""

  name: str  # As --gpu names it.
  compute_capability: Tuple[int, int]
  memory_gib: int  # As the card is sold: 16, 40, 80.
  # Dense peak FLOP/s by the precision of the arithmetic: float32 (CUDA cores), tf32 (float32
  # matmuls on Tensor Cores), float16 and bfloat16 (Tensor Cores, float32 accumulation); a
  # precision the GPU's Tensor Cores lack is absent.
  peak_flops: Mapping[str, float]
  source: str
  device_names: str  # A regular expression matching the names nvidia-smi and CUDA report.

  @property
  def memory_bytes(self) -> int:
    return self.memory_gib * 2**30


def _tflops(**figures: float) -> Mapping[str, float]:
  return {precision: tflops * TERA for precision, tflops in figures.items()}


_V100 = _tflops(float32=15.7, float16=125)
_A100 = _tflops(float32=19.5, tf32=156, float16=312, bfloat16=312)
_H100_SXM = _tflops(float32=67, tf32=494.5, float16=989.5, bfloat16=989.5)

GPUS: Tuple[GpuSpec, ...] = (
    GpuSpec("V100-16GB", (7, 0), 16, _V100, "NVIDIA Tesla V100 datasheet, V100 SXM2",
            r"V100-SXM2-16GB|V100 16GB"),
    GpuSpec("V100-32GB", (7, 0), 32, _V100, "NVIDIA Tesla V100 datasheet, V100 SXM2",
            r"V100-SXM2-32GB|V100 32GB"),
    GpuSpec("T4", (7, 5), 16, _tflops(float32=8.1, float16=65),
            "NVIDIA T4 Tensor Core GPU datasheet (mixed precision FP16/FP32)", r"\bT4\b"),
    GpuSpec("A10", (8, 6), 24, _tflops(float32=31.2, tf32=62.5, float16=125, bfloat16=125),
            "NVIDIA A10 Tensor Core GPU datasheet (sparsity figures halved)", r"\bA10\b"),
    GpuSpec("A100-40GB", (8, 0), 40, _A100, "NVIDIA A100 Tensor Core GPU datasheet, A100 SXM",
            r"A100.*40GB"),
    GpuSpec("A100-80GB", (8, 0), 80, _A100, "NVIDIA A100 Tensor Core GPU datasheet, A100 SXM",
            r"A100.*80GB"),
    GpuSpec("L4", (8, 9), 24, _tflops(float32=30.3, tf32=60, float16=121, bfloat16=121),
            "NVIDIA L4 Tensor Core GPU datasheet (sparsity figures halved)", r"\bL4\b"),
    GpuSpec("RTX-4090", (8, 9), 24,
            _tflops(float32=82.6, tf32=82.6, float16=165.2, bfloat16=165.2),
            "NVIDIA Ada Lovelace GPU architecture whitepaper, GeForce RTX 4090 (Tensor Core "
            "figures with float32 accumulation)", r"RTX 4090"),
    GpuSpec("H100-80GB", (9, 0), 80, _H100_SXM,
            "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM (sparsity figures halved)",
            r"H100 80GB HBM3|H100-SXM"),
    GpuSpec("H200", (9, 0), 141, _H100_SXM,
            "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM (sparsity figures halved)",
            r"H200"),
)


def find(name: str) -> GpuSpec:
  """The GPU called `name` (as --gpu writes it, any case); a UserError naming the known ones."""
  for spec in GPUS:
    if spec.name.lower() == name.lower():
      return spec
  names = [spec.name for spec in GPUS]
  close = difflib.get_close_matches(name.upper(), names, n=1, cutoff=0.5)
  hint = f" Did you mean {close[0]}?" if close else ""
  raise errors.UserError(f"--gpu={name} is not a GPU this table knows.{hint} Known: "
                         f"{', '.join(names)}; or give --compute_capability and --gpu_memory_gb.")


def identify(device_name: str) -> Optional[GpuSpec]:
  """The table's GPU whose names match `device_name` as nvidia-smi or CUDA print it
  ("NVIDIA A100-SXM4-40GB"); None for one it does not hold (such as a PCIe H100, whose peaks
  are lower than the SXM card's)."""
  for spec in GPUS:
    if re.search(spec.device_names, device_name):
      return spec
  return None


def peak_flops(spec: GpuSpec, policy: str, tensor_float_32: bool = True) -> float:
  """The dense peak FLOP/s of `spec` for matmuls and convolutions under the Keras dtype
  `policy`: the Tensor Cores' float16 or bfloat16 rate under mixed precision; under float32 the
  TF32 rate where the GPU has it and `tensor_float_32` (TensorFlow's and JAX's default on GPUs
  from compute capability 8.0), else the CUDA cores' float32 rate."""
  figures = spec.peak_flops
  wanted = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}.get(
      policy, "tf32" if tensor_float_32 else "float32")
  # A GPU without bfloat16 (or TF32) Tensor Cores runs that arithmetic on its CUDA cores.
  return figures.get(wanted, figures["float32"])
