"""The benchmark: its targets and report from given figures (milliseconds), and one tiny real run
that checks every peer measures and the record is whole (no timing is asserted)."""

import json
import subprocess
import sys

import pytest

from tests.processes import ROOT
from trainer.bench import benchmark
from trainer.bench import timing


def row(median):
  return benchmark.summary([median * 0.9, median, median * 1.1])


ROWS = {
    "default/32/tuned_fit": row(40_000), "default/32/minimal_loop": row(30_000),
    "default/32/harness": row(90_000), "mirrored/32/minimal_loop": row(15_000),
    "mirrored/32/harness": row(13_000), "default/4096/harness": row(300_000)}
ACCURACY = {"blog_script": {"wall_s": row(44.0), "test_accuracy": row(0.88)},
            "fast_seed0": {"wall_s": row(8.0), "test_accuracy": row(0.885)},
            "fast_seed1": {"wall_s": row(7.5), "test_accuracy": row(0.879 / 0.9)},
            "fast_startup_s": {"imports": 2.0}}


def test_targets_read_the_medians_of_the_right_rows():
  ratios, targets = benchmark.ratios_and_targets(ROWS, ceiling_flops=4e11,
                                                 flops_per_example=818_176, accuracy=ACCURACY)
  assert ratios["harness_over_tuned_fit_b32"] == 90_000 / 40_000
  assert ratios["best_harness"] == "default/4096/harness"
  assert ratios["best_harness_mfu"] == 300_000 * 818_176 / 4e11
  assert ratios["mirrored_share_b32"] == {"harness": 13 / 90, "minimal_loop": 0.5}
  assert ratios["fast_speedup_over_blog"] == 44.0 / 8.0  # The slower seed counts.
  assert targets == {
      "harness >= 1.5x tuned_fit at batch 32": True,
      "best harness >= 85% of the fp32 ceiling": False,
      "mirrored x2 keeps >= minimal loop's share at batch 32": False,
      "fast.cfg >= 0.88 for seeds 0 and 1": False,  # Seed 1's slowest round reached 0.879.
      "fast.cfg >= 5x faster than the blog's script": True}


@pytest.mark.slow
def test_tiny_benchmark_measures_every_peer_and_writes_the_record(fashion_subset, tmp_path):
  # The suite's 4,000 + 1,000 images of Fashion-MNIST: --tiny trains on 4,096 at most, and the
  # harness evaluates its whole test split.
  output, report = tmp_path / "benchmark.json", tmp_path / "benchmark.md"
  result = subprocess.run(
      [sys.executable, "-m", "trainer.benchmark", "--tiny", "--batch_sizes=32",
       "--strategies=default", "--repeats=1", "--accuracy_repeats=0",
       f"--data_dir={fashion_subset / 'idx'}", f"--output={output}",
       f"--report={report}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(output.read_text())
  assert list(record["throughput"]) == [f"default/32/{peer}" for peer in benchmark.PEERS]
  for name, measured in record["throughput"].items():
    assert 0 < measured["min"] <= measured["median"] <= measured["max"], name
  assert record["flops_per_example"] == 818_176  # Read from the compiled step.
  assert record["ceiling"]["flops_per_sec"] > 0
  assert record["machine"]["cpu"] and "tf_enable_onednn_opts" in record["machine"]
  assert "harness >= 1.5x tuned_fit at batch 32" in record["targets_met"]
  assert "| default | 32 | harness |" in result.stdout  # The printed table,
  assert "| default | 32 | harness |" in report.read_text()  # and the same as Markdown.
  # Every model kind's peers and own ceiling, at the harness's precision.
  assert list(record["models"]) == ["mlp/32", "cnn/32"]
  for row in record["models"].values():
    assert {"harness", "tuned_fit", "plain_fit"} == set(row["peers"])
    assert row["ceiling"]["examples_per_sec"] > 0 and row["precision"] in (
        "float32", "mixed_bfloat16")
  assert "| cnn | 32 |" in result.stdout
  assert "failed call to cuInit" not in result.stderr  # TensorFlow's chatter is filtered.


class _FakeDevice:
  """A device with `overhead` seconds of fixed cost a call and `work` seconds an iteration,
  on a clock of its own."""

  def __init__(self, overhead: float, work: float):
    self.overhead, self.work, self.now, self.calls = overhead, work, 0.0, []

  def clock(self) -> float:
    return self.now

  def run(self, count: int) -> None:
    self.calls.append(self.overhead + count * self.work)
    self.now += self.calls[-1]


@pytest.mark.parametrize("overhead, work", [(1e-3, 52e-6),  # A 2048 cube in float16 on an H100.
                                            (1e-3, 0.5),  # The same on a 2-core CPU.
                                            (1e-3, 1e-7)])
def test_timed_calls_hold_enough_work_that_the_fixed_cost_does_not_count(overhead, work):
  device = _FakeDevice(overhead, work)
  seconds = timing.seconds_per_iteration(device.run, clock=device.clock)
  assert work <= seconds <= work * 1.011  # A fixed count of 3 read 52 us as 385 us.
  timed = device.calls[-3:]  # Best of three, each at least 100 ms.
  assert len(timed) == 3 and min(timed) >= timing.MIN_CALL_SECONDS


@pytest.mark.parametrize("capabilities, tf32_enabled, math", [
    ([(8, 0)] * 8, True, "tf32"), ([(9, 0)], True, "tf32"), ([(8, 0)], False, "fp32"),
    ([(7, 0)], True, "fp32"), ([], True, "fp32")])
def test_a_float32_ceiling_says_when_it_ran_as_tf32(capabilities, tf32_enabled, math):
  assert benchmark.float32_math(capabilities, tf32_enabled) == math


def test_the_ceilings_of_this_machine_name_their_math():
  # A seconds-long pass over the real code path (tiny shapes, short calls); figures not asserted.
  from trainer.distribute import hardware  # pylint: disable=g-import-not-at-top
  found = benchmark.ceilings(tiny=True, quick=True)
  assert found["float32"]["math"] == "fp32" and found["float32"]["flops_per_sec"] > 0
  assert ("bfloat16" in found) == bool(hardware.cpu_bfloat16())
