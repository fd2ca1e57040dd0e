"""MFU's arithmetic, and the CPU's measured ceiling kept once per machine in the user's cache."""

import json
import os

import pytest

from trainer.records import mfu as mfu_lib
from trainer.records import run_record
from trainer import train


def test_mfu_is_the_step_flops_over_the_peak_of_every_device():
  peak = mfu_lib.Peak(1e11, "datasheet")
  figures = mfu_lib.mfu(flops_per_step=1e9, steps=100, productive_s=10.0, peak=peak, devices=2)
  assert figures == {"mfu": pytest.approx(0.05), "peak_flops": 2e11, "peak_source": "datasheet"}
  assert mfu_lib.mfu(1e9, 0, 0.0, peak, 2)["mfu"] is None


def test_the_cpu_ceiling_is_measured_once_per_machine_and_precision(tmp_path):
  measured = []

  def measure(dtype):
    measured.append(dtype)
    return {"flops_per_sec": 5e10 * len(measured), "best": "2048x2048x2048 XLA"}

  machine = dict(folder=str(tmp_path), cpu="AMD EPYC", flags={"avx512f", "avx512_bf16"}, cores=2)
  first = mfu_lib.cpu_peak("mixed_bfloat16", measure, **machine)
  again = mfu_lib.cpu_peak("mixed_bfloat16", measure, **machine)
  assert measured == ["bfloat16"] and again == first and first.flops_per_device == 5e10
  assert "measured bfloat16 matmul ceiling" in first.source
  # Another precision, other flags or another core count is another machine.
  mfu_lib.cpu_peak("float32", measure, **machine)
  mfu_lib.cpu_peak("mixed_bfloat16", measure, **{**machine, "flags": {"avx512f"}})
  mfu_lib.cpu_peak("mixed_bfloat16", measure, **{**machine, "cores": 8})
  assert measured == ["bfloat16", "float32", "bfloat16", "bfloat16"]
  assert mfu_lib.cpu_peak("mixed_bfloat16", measure, **machine) == first


@pytest.mark.slow
def test_the_ceiling_is_measured_under_op_determinism(fresh_process_answers):
  # A --deterministic run on a machine without a cached ceiling measures it with op determinism
  # on, which refuses unseeded random ops: in a fresh process, where no run has set a seed.
  measured = fresh_process_answers["ceiling_under_determinism"]
  assert isinstance(measured, float) and measured > 0, measured


def test_a_damaged_cache_is_measured_again(tmp_path):
  machine = dict(folder=str(tmp_path), cpu="AMD EPYC", flags={"avx2"}, cores=2)
  mfu_lib.cpu_peak("float32", lambda dtype: {"flops_per_sec": 1e10, "best": "s"}, **machine)
  [name] = os.listdir(str(tmp_path))
  with open(os.path.join(str(tmp_path), name), "w") as f:
    f.write('{"flops_per')
  peak = mfu_lib.cpu_peak("float32", lambda dtype: {"flops_per_sec": 2e10, "best": "s"},
                          **machine)
  assert peak.flops_per_device == 2e10
  with open(os.path.join(str(tmp_path), name)) as f:
    assert json.load(f)["flops_per_sec"] == 2e10


def test_the_cache_folder_is_the_users():
  assert mfu_lib.cache_folder({"XDG_CACHE_HOME": "/c"}) == "/c/keras-distributed-trainer"
  assert mfu_lib.cache_folder({}) == os.path.join(os.path.expanduser("~"), ".cache",
                                                  "keras-distributed-trainer")


def test_a_gpu_peak_is_its_datasheets_at_the_runs_precision_and_an_unknown_gpu_has_none():
  peak = mfu_lib.device_peak("mixed_bfloat16", ["NVIDIA H100 80GB HBM3"] * 8)
  assert peak.flops_per_device == 989.5e12 and not peak.per_machine
  assert peak.source.startswith("datasheet dense peak of the H100-80GB at mixed_bfloat16 (")
  unknown = mfu_lib.device_peak("float32", ["NVIDIA GeForce GTX 1080"])
  assert unknown.flops_per_device is None and "GTX 1080" in unknown.source
  assert mfu_lib.mfu(1e9, 100, 10.0, unknown, 8) == {
      "mfu": None, "peak_flops": None, "peak_source": unknown.source}
  mixed = mfu_lib.device_peak("float32", ["NVIDIA A100-SXM4-40GB", "NVIDIA L4"])
  assert mixed.flops_per_device is None and "2 kinds" in mixed.source
  cpu = mfu_lib.device_peak("float32", [], cpu=lambda precision: mfu_lib.Peak(
      1e11, "ceiling", per_machine=True))
  assert cpu == mfu_lib.Peak(1e11, "ceiling", per_machine=True)


def test_a_runs_mfu_is_its_kept_steps_flops_over_the_peak_it_names(finished_runs):
  for _, results in finished_runs.values():
    # The mlp at batch 64: forward, the weights' gradients and the second layer's input
    # gradient, 2 x (784 x 256 x 2 + 256 x 10 x 3) FLOPs an example, in every API.
    assert results["flops_per_step"] == 64 * 818_176
    figures = results["goodput"]
    assert results["mfu"] == pytest.approx(
        results["flops_per_step"] * figures["productive_steps"] / figures["productive_s"]
        / results["peak_flops"])
    assert 0 < results["mfu"] <= 1
    # conftest's ceiling for the suite, of one machine, named as a measured one is.
    assert results["peak_flops"] == 1e13
    assert results["peak_source"].startswith(
        "measured float32 matmul ceiling of this CPU (the test suite's figure, ")


def test_the_summary_gives_the_mfu_and_its_peak(finished_runs):
  _, results = finished_runs["functional"]
  [line] = train._mfu_line(run_record.RunResults(**results))  # pylint: disable=protected-access
  assert line == (f"  MFU {results['mfu']:.1%} of 10 TFLOP/s, the measured float32 matmul "
                  "ceiling of this CPU")
