"""Chooses the Keras dtype policy of a run: float32 or mixed float16/bfloat16."""

from typing import Tuple

from trainer.distribute import hardware


def resolve_precision(requested: str) -> Tuple[str, str]:
  """Returns (policy name, the reason for it) for the --precision value `requested`.

  auto picks mixed_float16 when every GPU has Tensor Cores (compute capability 7.0 or more),
  where it is about twice as fast; elsewhere float32, since CPUs and older GPUs gain little or
  nothing from float16 and would pay for the casts.
  """
  if requested != "auto":
    return requested, "asked for with --precision"
  capabilities = hardware.gpu_compute_capabilities()
  if not capabilities:
    return "float32", "auto: no GPU, so no Tensor Cores to use"
  if min(capabilities) >= (7, 0):
    return "mixed_float16", f"auto: GPU compute capability {min(capabilities)} >= 7.0"
  return "float32", f"auto: GPU compute capability {min(capabilities)} < 7.0"


def uses_loss_scaling(policy: str) -> bool:
  """float16 gradients underflow without loss scaling; bfloat16 has float32's range."""
  return policy == "mixed_float16"
