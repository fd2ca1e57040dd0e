"""--precision=auto's choice per machine and model (trainer.distribute.precision), in milliseconds:
the machine is faked, since CI runs on CPUs with and without bfloat16 instructions."""

import pytest

from trainer.distribute import hardware
from trainer.distribute import precision


@pytest.fixture
def machine(monkeypatch):
  """machine(gpus=[(8, 0)], cpu_flags={"avx512_bf16"}) makes the hardware look like that."""
  def fake(gpus=(), cpu_flags=()):
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: list(gpus))
    monkeypatch.setattr(hardware, "cpu_flags", lambda: set(cpu_flags))
  return fake


@pytest.mark.parametrize("flags, instructions", [({"avx512f", "amx_bf16", "avx512_bf16"},
                                                  "AMX-BF16"),
                                                 ({"avx512f", "avx512_bf16"}, "AVX512_BF16")])
@pytest.mark.parametrize("model", ["cnn", "resnet18", "resnet50"])
def test_auto_trains_convnets_in_bfloat16_on_cpus_with_bfloat16_instructions(
    machine, flags, instructions, model):
  machine(cpu_flags=flags)
  policy, reason = precision.resolve_precision("auto", model)
  assert policy == "mixed_bfloat16"
  assert instructions in reason and model in reason  # The start line says why.


@pytest.mark.parametrize("model", ["applications.MobileNetV2", "nets.py:build"])
def test_auto_keeps_float32_where_bfloat16_is_not_measured_faster(machine, model):
  machine(cpu_flags={"avx512f", "amx_bf16", "avx512_bf16"})
  policy, reason = precision.resolve_precision("auto", model)
  assert policy == "float32" and "AMX-BF16" in reason and model in reason


def test_auto_trains_the_mlp_in_bfloat16_only_where_its_step_runs_without_xla(machine):
  machine(cpu_flags={"avx512f", "avx512_bf16"})
  assert precision.resolve_precision("auto", "mlp", xla=False)[0] == "mixed_bfloat16"
  policy, reason = precision.resolve_precision("auto", "mlp", xla=True)
  assert policy == "float32" and "XLA" in reason


def test_auto_keeps_float32_on_cpus_without_bfloat16_instructions(machine):
  machine(cpu_flags={"avx2", "fma", "avx512f"})
  assert precision.resolve_precision("auto", "cnn") == (
      "float32", "auto: no GPU, and no AMX-BF16 or AVX512_BF16 on the CPU")


@pytest.mark.parametrize("gpus, policy, why", [
    ([(9, 0)] * 8, "mixed_bfloat16", "9.0 >= 8.0"),  # H100.
    ([(8, 0), (8, 6)], "mixed_bfloat16", "8.0 >= 8.0"),  # A100 beside an RTX 3090.
    ([(7, 0)] * 4, "mixed_float16", "7.0: Tensor Cores without bfloat16"),  # V100.
    ([(7, 5)], "mixed_float16", "7.5"),  # T4.
    ([(8, 0), (7, 0)], "mixed_float16", "7.0"),  # The oldest decides for every replica.
    ([(8, 0), (6, 1)], "float32", "6.1 < 7.0"),
])
@pytest.mark.parametrize("model", ["mlp", "cnn", "nets.py:build"])
def test_auto_on_gpus_follows_the_oldest_gpus_tensor_cores_whatever_the_cpu(
    machine, gpus, policy, why, model):
  machine(gpus=gpus, cpu_flags={"amx_bf16"})
  chosen, reason = precision.resolve_precision("auto", model)
  assert chosen == policy and why in reason  # The start line says why.
  assert precision.uses_loss_scaling(chosen) == (policy == "mixed_float16")


def test_a_precision_asked_for_is_kept(machine):
  machine(cpu_flags={"amx_bf16"})
  assert precision.resolve_precision("float32", "cnn") == ("float32", "asked for with --precision")


def test_cpu_flags_are_read_from_proc_cpuinfo():
  flags = hardware.cpu_flags()
  try:
    with open("/proc/cpuinfo") as f:
      listed = any(line.startswith("flags") for line in f)
  except OSError:
    listed = False
  if not listed:
    pytest.skip("no /proc/cpuinfo flags on this system")
  assert "sse2" in flags  # Every x86-64 CPU has it.
  assert hardware.cpu_bfloat16() in (None, "AMX-BF16", "AVX512_BF16")
