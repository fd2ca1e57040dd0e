"""MFU's arithmetic, and the CPU's measured ceiling kept once per machine in the user's cache."""

import json
import os

import pytest

from trainer.records import mfu as mfu_lib


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
