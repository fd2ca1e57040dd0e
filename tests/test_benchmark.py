"""The benchmark runs end to end at tiny sizes and writes well-formed output (no timing checks)."""

import json
import subprocess
import sys

from tests.processes import ROOT

ROWS = ("a_plain_keras", "b_harness_defaults", "c_harness_best", "d_ceiling",
        "e_harness_best_synthetic", "f_one_device", "f_mirrored_one_device")


def test_tiny_benchmark_writes_every_row_ratio_and_target(fashion_mnist_dir, tmp_path):
  output = tmp_path / "benchmark.json"
  result = subprocess.run(
      [sys.executable, "-m", "trainer.benchmark", "--tiny", f"--data_dir={fashion_mnist_dir}",
       f"--output={output}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(output.read_text())
  assert tuple(record["rows"]) == ROWS
  for name, row in record["rows"].items():
    assert row["intervals"] >= 5, name
    assert 0 < row["min"] <= row["examples_per_sec"] <= row["max"], name
  assert record["rows"]["d_ceiling"]["flops_per_sec"] > 0
  assert record["rows"]["c_harness_best"]["mfu_vs_ceiling"] > 0
  assert set(record["ratios"]) == {"b_over_a", "c_over_d", "real_over_synthetic",
                                   "one_device_over_default", "mirrored_one_device_over_default"}
  assert len(record["targets_met"]) == 6 and record["time_to_first_step_s"] > 0
  assert record["tiny"] is True and record["device"].startswith("CPU: ")
  assert "| a_plain_keras | 32 |" in result.stdout  # The printed table.
