"""Chooses the Keras dtype policy of a run: float32 or mixed float16/bfloat16."""

from typing import Optional, Tuple

# The built-in models that train faster in mixed_bfloat16 on a CPU with bfloat16 matrix
# instructions, which oneDNN uses for convolutions and matmuls; the mlp only without XLA, whose
# fused step gains nothing from bfloat16's narrower matmuls (docs/measurements.md, "bfloat16 on
# CPUs"). resnet34 and resnet50 are resnet18's blocks.
BFLOAT16_FASTER_ON_CPU = ("cnn", "resnet18", "resnet34", "resnet50")
# auto on JAX's CPU devices: the bfloat16 measurements above were of oneDNN's kernels, not XLA's.
JAX_CPU_PRECISION = ("float32", "auto: JAX on CPU (its bfloat16 speed is not measured here)")


def resolve_precision(requested: str, model: str = "mlp",
                      xla: bool = False) -> Tuple[str, str]:
  """Returns (policy name, the reason for it) for the --precision value `requested`, the
  --model value `model` and whether its train step runs under XLA on one replica (asked for on
  one replica, so runs that differ only in strategy get the same precision).

  On GPUs auto follows the slowest GPU's compute capability (`gpu_precision`). On CPUs with AMX-BF16 or
  AVX512_BF16 it picks mixed_bfloat16 for the convnets of BFLOAT16_FASTER_ON_CPU, and for the
  mlp where its step runs without XLA (from batch XLA_MAX_BATCH, or --nojit_compile); float32
  elsewhere: the mlp under XLA is
  slower in bfloat16, and your own model or a keras.applications one is not measured (ask for
  it with --precision=mixed_bfloat16).
  """
  if requested != "auto":
    return requested, "asked for with --precision"
  # Here, not at the top: the rules below are pure, and the backends' device rules, which the
  # device plan reads before a framework starts, take them without TensorFlow.
  from trainer.distribute import hardware  # pylint: disable=g-import-not-at-top
  capabilities = hardware.gpu_compute_capabilities()
  if capabilities:
    return gpu_precision(capabilities)
  return cpu_precision(hardware.cpu_bfloat16(), model, xla)


def cpu_precision(bfloat16: Optional[str], model: str, xla: bool) -> Tuple[str, str]:
  """auto's (policy, reason) on a CPU whose bfloat16 matrix instructions are `bfloat16`
  ("AMX-BF16", "AVX512_BF16" or None), for `model` whose step runs under XLA or not (`xla`):
  the rule resolve_precision states, as a function of those facts alone."""
  if not bfloat16:
    return "float32", "auto: no GPU, and no AMX-BF16 or AVX512_BF16 on the CPU"
  if model in BFLOAT16_FASTER_ON_CPU:
    return "mixed_bfloat16", f"auto: the CPU has {bfloat16}, and {model} trains faster in bfloat16"
  if model == "mlp":
    if xla:
      return "float32", (f"auto: the CPU has {bfloat16}, but the mlp's XLA-compiled step is no "
                         "faster in bfloat16")
    return "mixed_bfloat16", (f"auto: the CPU has {bfloat16}, and the mlp's step without XLA "
                              "trains faster in bfloat16")
  return "float32", (f"auto: the CPU has {bfloat16}, but {model} is not known to train faster "
                     "in bfloat16")


def gpu_precision(capabilities) -> Tuple[str, str]:
  """auto's (policy, reason) on GPUs of these (major, minor) compute capabilities: the oldest
  decides, as every replica runs the same policy.

  8.0 and newer (Ampere, Hopper, ...): mixed_bfloat16. Their Tensor Cores run bfloat16 at
  float16's rate, and bfloat16 has float32's range, so no loss scaling: no skipped steps and no
  cross-replica decision in every step. 7.x (Volta, Turing): mixed_float16 with dynamic loss
  scaling, their Tensor Cores having no bfloat16. Older: float32, without Tensor Cores.
  """
  oldest = min(tuple(capability) for capability in capabilities)
  label = f"{oldest[0]}.{oldest[1]}"
  if oldest >= (8, 0):
    return "mixed_bfloat16", (f"auto: GPU compute capability {label} >= 8.0, whose Tensor Cores "
                              "run bfloat16 as fast as float16 without loss scaling")
  if oldest >= (7, 0):
    return "mixed_float16", (f"auto: GPU compute capability {label}: Tensor Cores without "
                             "bfloat16, so float16 with dynamic loss scaling")
  return "float32", f"auto: GPU compute capability {label} < 7.0, without Tensor Cores"


def uses_loss_scaling(policy: str) -> bool:
  """float16 gradients underflow without loss scaling; bfloat16 has float32's range."""
  return policy == "mixed_float16"
