"""The table of named GPUs: finding one by --gpu or by the name nvidia-smi prints, and the peak
FLOP/s a precision runs at."""

import pytest

from trainer import errors
from trainer.distribute import gpu_specs
from trainer.distribute import precision


def test_every_gpu_states_its_capability_memory_float32_peak_and_source():
  for spec in gpu_specs.GPUS:
    assert spec.compute_capability >= (7, 0) and spec.memory_gib >= 16, spec.name
    assert spec.peak_flops["float32"] > 1e12 and spec.source.startswith("NVIDIA"), spec.name


def test_autos_precision_runs_on_tensor_cores_of_every_gpu_in_the_table():
  # The table and the precision rule agree: auto never picks what the GPU's Tensor Cores lack.
  for spec in gpu_specs.GPUS:
    policy, _ = precision.gpu_precision([spec.compute_capability])
    wanted = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[policy]
    assert spec.peak_flops.get(wanted, 0) > spec.peak_flops["float32"], spec.name


@pytest.mark.parametrize("name, expected", [("h100-80gb", "H100-80GB"), ("V100-16GB", "V100-16GB")])
def test_find_takes_any_case(name, expected):
  assert gpu_specs.find(name).name == expected


def test_an_unknown_gpu_is_refused_with_the_closest_name_and_the_way_around():
  with pytest.raises(errors.UserError, match=r"--gpu=A100-40G .*Did you mean A100-40GB\?.*"
                                             r"--compute_capability"):
    gpu_specs.find("A100-40G")


@pytest.mark.parametrize("device_name, expected", [
    ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
    ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
    ("NVIDIA A100 80GB PCIe", "A100-80GB"),  # PCIe and SXM A100s have the same peaks.
    ("Tesla V100-SXM2-16GB", "V100-16GB"),
    ("Tesla V100-SXM2-32GB", "V100-32GB"),
    ("NVIDIA H100 80GB HBM3", "H100-80GB"),
    ("NVIDIA H200", "H200"),
    ("Tesla T4", "T4"),
    ("NVIDIA A10", "A10"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA GeForce RTX 4090", "RTX-4090"),
    ("NVIDIA H100 PCIe", None),  # Lower peaks than the SXM card: not guessed.
    ("Tesla V100-PCIE-16GB", None),
])
def test_identify_reads_the_names_nvidia_smi_prints(device_name, expected):
  spec = gpu_specs.identify(device_name)
  assert (spec.name if spec else None) == expected


def test_peak_follows_the_policy_tf32_where_the_gpu_has_it_and_cuda_cores_otherwise():
  a100, v100 = gpu_specs.find("A100-40GB"), gpu_specs.find("V100-16GB")
  assert gpu_specs.peak_flops(a100, "mixed_bfloat16") == 312e12
  assert gpu_specs.peak_flops(a100, "float32") == 156e12  # TF32 on Tensor Cores.
  assert gpu_specs.peak_flops(a100, "float32", tensor_float_32=False) == 19.5e12
  assert gpu_specs.peak_flops(v100, "mixed_float16") == 125e12
  assert gpu_specs.peak_flops(v100, "float32") == 15.7e12  # No TF32 on Volta.
  assert gpu_specs.peak_flops(v100, "mixed_bfloat16") == 15.7e12  # No bfloat16 Tensor Cores.


def test_sparsity_figures_are_halved_to_dense_ones():
  # The H100 SXM datasheet: BF16 Tensor Core 1,979 TFLOPS "with sparsity".
  assert gpu_specs.peak_flops(gpu_specs.find("H100-80GB"), "mixed_bfloat16") == 989.5e12
