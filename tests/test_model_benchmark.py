"""The per-model benchmark: each model's own ceiling (trainer.bench.op_ceiling) found from its graph,
and the quick report read from given figures. Timing is not asserted."""

import os
import sys

import pytest

from trainer.bench import benchmark
from trainer.bench import flops
from trainer.bench import model_benchmark
from trainer.bench import op_ceiling
from trainer.data import input_pipeline
from trainer.models import factory


@pytest.mark.parametrize("precision, dtype", [("float32", "float32"),
                                              ("mixed_bfloat16", "bfloat16")])
def test_resnet18s_heavy_ops_are_its_convolutions_and_dense_in_the_compute_dtype(precision,
                                                                                 dtype):
  model = factory.build_model("resnet18", "subclass", (16, 16, 3), 10, precision=precision)
  ops = op_ceiling.heavy_ops(model, 4, (16, 16, 3))
  # The stem, 16 block convolutions, 3 projection shortcuts, and the classifier.
  assert [op.kind for op in ops].count("Conv2D") == 20 and ops[-1].kind == "MatMul"
  assert {op.dtype for op in ops} == {dtype}
  # Only the stem reads the images, whose gradient nothing needs.
  assert [op.input_needs_gradient for op in ops] == [False] + [True] * 20
  assert ops[0].input_shape == (4, 16, 16, 3) and ops[0].kernel_shape == (3, 3, 3, 64)


def test_the_cnns_ceiling_times_the_flops_xla_counts_in_its_train_step():
  model = factory.build_model("cnn", "functional", (28, 28, 1), 10)
  timed = op_ceiling.time_ops(op_ceiling.heavy_ops(model, 4, (28, 28, 1)), calls=1)
  assert timed["flops"] == flops.train_step_flops(model, False, (28, 28, 1), 4)
  assert timed["seconds"] > 0


def _row(model, harness, tuned, plain, ceiling, flops_per_example, precision="float32"):
  def peer(rate, first_step_s=2.0, jit=False):
    return {"examples_per_sec": rate, "first_step_s": first_step_s, "jit_compile": jit}
  return {"model": model, "batch_size": 128, "precision": precision,
          "precision_reason": "auto: the CPU has AMX-BF16, and resnet18 trains faster in bfloat16",
          "ceiling": {"examples_per_sec": ceiling, "flops_per_example": flops_per_example},
          "peers": {"harness": peer(harness), "tuned_fit": peer(tuned, 3.0),
                    "plain_fit": peer(plain, 4.0)}}


def test_shares_put_the_harness_against_fit_and_both_ceilings():
  row = _row("resnet18", harness=120.0, tuned=100.0, plain=60.0, ceiling=300.0,
             flops_per_example=1.5e9)
  shares = model_benchmark.shares(row, big_square_flops=9e11)
  assert shares == pytest.approx({"over_tuned_fit": 1.2, "over_plain_fit": 2.0,
                                  "of_own_ceiling": 0.4, "of_big_square_ceiling": 0.2})
  row["peers_mirrored"] = {"harness": {"examples_per_sec": 102.0}}
  assert model_benchmark.shares(row, None)["mirrored_share"] == pytest.approx(0.85)


def test_the_quick_report_names_the_machine_and_has_one_row_per_model():
  rows = {"resnet18/128": _row("resnet18", 120.0, 100.0, 60.0, 300.0, 1.5e9, "mixed_bfloat16")}
  for row in rows.values():
    row["shares"] = model_benchmark.shares(row, 9e11)
  record = {"date": "2026-12-03", "tf_version": "2.21.0", "keras_version": "3.15.0",
            "machine": {"cpu": "Intel Xeon", "cores": 2, "extensions": ["amx_bf16"]},
            "gpus": [{"name": "NVIDIA A100", "compute_capability": [8, 0],
                      "memory_mib": 40960}],
            "ceilings": {"float32": {"flops_per_sec": 2.4e11, "best": "2048x2048x2048"}},
            "models": rows}
  report = benchmark.format_quick_report(record)
  assert "1 GPU: NVIDIA A100 (compute capability 8.0, 40960 MiB)" in report
  assert "float32 240 GFLOP/s" in report
  assert ("| resnet18 | 128 | mixed_bfloat16 | 120.0 | 100.0 | 60.0 | 300.0 | 1.20x | 2.00x "
          "| 40% | 20% | 2.0 / 3.0 / 4.0 |") in report
  assert "- precision auto: the CPU has AMX-BF16" in report


def test_a_row_without_its_precisions_big_square_ceiling_shows_a_dash():
  row = _row("cnn", 120.0, 100.0, 60.0, 300.0, 1.5e9, "mixed_bfloat16")
  row["shares"] = model_benchmark.shares(row, None)  # Only float32's was measured.
  assert "| 40% | - | 2.0 / 3.0 / 4.0 |" in benchmark.format_models({"models": {"cnn": row}})[2]


@pytest.mark.parametrize("ceiling, expected", [
    (150_000.0, 300),  # 2 s at the ceiling, in whole calls of 100: a GPU's window.
    (5_000.0, 200),  # A slow machine keeps the workload's own count.
])
def test_timed_windows_last_seconds_at_the_models_own_ceiling(ceiling, expected):
  workload = model_benchmark.Workload("mlp", (28, 28, 1), 1024, 100, 200)
  assert model_benchmark.timed_steps_for(workload, ceiling) == expected


def test_a_row_over_several_gpus_reads_per_gpu_against_one_gpus_ceilings():
  row = _row("resnet50", harness=8000.0, tuned=6000.0, plain=4000.0, ceiling=2500.0,
             flops_per_example=1.2e10)
  row["peers"]["harness"].update(strategy="mirrored", replicas=8)
  shares = model_benchmark.shares(row, big_square_flops=6e14)
  assert shares["of_own_ceiling"] == pytest.approx(0.4)  # 1,000 per GPU of 2,500.
  assert shares["of_big_square_ceiling"] == pytest.approx(0.02)
  line = benchmark.format_models({"models": {"resnet50": {**row, "shares": shares}}})[2]
  assert line.startswith("| resnet50 | 128 | float32, mirrored x8 | 8,000.0 (1,000.0 each) |")


def test_each_peers_output_goes_to_its_own_log_and_the_console_keeps_the_figures(
    tmp_path, capfd, monkeypatch):
  # Each peer prints as the real ones do, through Python and at the file descriptors where
  # TensorFlow's C++ writes (sub_run_log's own test captures each way; the tiny benchmark runs
  # the real peers, and the backend test below a real run's output into its log).
  def peer(name, figures):
    def measure(*args, **kwargs):
      del args, kwargs  # Unused.
      print(f"Epoch 1/1 of {name}")
      sys.stderr.write(f"UserWarning: {name} warns\n")
      os.write(2, f"E0000 {name} C++ line\n".encode())
      return figures
    return measure
  rate = {"examples_per_sec": 10.0, "first_step_s": 1.0, "jit_compile": False}
  monkeypatch.setattr(model_benchmark, "measure_ceiling", lambda *args: {
      "examples_per_sec": 100.0, "flops_per_example": 1.0})
  monkeypatch.setattr(model_benchmark, "measure_harness", peer("harness", rate))
  monkeypatch.setattr(model_benchmark, "measure_tuned_fit", peer("tuned_fit", rate))
  monkeypatch.setattr(model_benchmark, "measure_plain_fit", peer("plain_fit", rate))
  rows = model_benchmark.run_workloads(model_benchmark.TINY_WORKLOADS[:1], str(tmp_path / "runs"),
                                       log_dir=str(tmp_path / "logs"))
  console = capfd.readouterr()
  lines = console.out.splitlines()
  assert lines == ["  mlp/32 harness: 10.0 examples/s", "  mlp/32 tuned_fit: 10.0 examples/s",
                   "  mlp/32 plain_fit: 10.0 examples/s"], console.out
  assert console.err == "", console.err
  logs = sorted(os.listdir(tmp_path / "logs"))
  assert logs == ["mlp-32-harness.log", "mlp-32-plain_fit.log", "mlp-32-tuned_fit.log"]
  for name in ("harness", "tuned_fit", "plain_fit"):
    assert (tmp_path / "logs" / f"mlp-32-{name}.log").read_text() == (
        f"Epoch 1/1 of {name}\nUserWarning: {name} warns\nE0000 {name} C++ line\n")
  assert rows["mlp/32"]["peers"]["harness"]["examples_per_sec"] == 10.0


def _backend_row(model, precision, reason, rates):
  return {"model": model, "batch_size": 128, "precision": precision, "precision_reason": reason,
          "strategy": "default", "peers": {
              backend: {"harness": {"examples_per_sec": harness}, "fit": {"examples_per_sec": fit}}
              for backend, (harness, fit) in rates.items()}}


def test_the_backend_table_puts_every_backend_of_a_row_at_its_one_precision():
  models = {"mlp/128": _row("mlp", 1.0, 1.0, 1.0, 1.0, 1.0, "mixed_bfloat16"),
            "resnet18/128": _row("resnet18", 1.0, 1.0, 1.0, 1.0, 1.0, "mixed_bfloat16")}
  backends = {"mlp/128": _backend_row("mlp", "float32", "the reason", {
      "tensorflow": (1000.0, 800.0), "jax": (1500.0, 1200.0)})}
  lines = benchmark.format_backends({"models": models, "backends": backends})
  assert lines[0] == ("| model | batch | precision | tensorflow harness | tensorflow fit | "
                      "jax harness | jax fit | jax / tensorflow (harness) |")
  # The TensorFlow figures are the backend table's own, at float32, not the model table's.
  assert lines[2] == "| mlp | 128 | float32 | 1,000.0 | 800.0 | 1,500.0 | 1,200.0 | 1.50x |"
  assert lines[3] == ("- Every backend of a row on one device (the default strategy), at the "
                      "row's precision: mlp: the reason.")
  assert lines[4].startswith("- Not timed across backends on CPUs: resnet18 (XLA's CPU")
  assert benchmark.format_backends({"models": models}) == []  # No other backend installed.


def test_the_backend_table_runs_before_the_benchmarks_process_takes_a_device(monkeypatch,
                                                                              tmp_path):
  # TensorFlow keeps a GPU's memory until its process ends: the backends' own processes must
  # have finished before this one's first ceiling starts its devices.
  calls = []
  monkeypatch.setattr(benchmark, "measure_backends",
                      lambda log_dir, root: calls.append("backends") or {})
  monkeypatch.setattr(benchmark, "ceilings", lambda tiny, quick: calls.append("device") or {})
  monkeypatch.setattr(model_benchmark, "run_workloads",
                      lambda *args, **kwargs: calls.append("models") or {})
  assert benchmark.run_quick(str(tmp_path))["backends"] == {}
  assert calls == ["backends", "device", "models"]


@pytest.mark.parametrize("capabilities, bfloat16, model, xla, expected", [
    ((), "AMX-BF16", "cnn", False, "float32"),  # TensorFlow's auto: mixed_bfloat16; JAX's: float32.
    ((), "AVX512_BF16", "mlp", False, "float32"),
    ((), None, "cnn", False, "float32"),  # No bfloat16 instructions: float32 on both.
    (((8, 0), (9, 0)), None, "resnet50", False, "mixed_bfloat16"),  # GPUs: one rule for both.
    (((7, 0),), None, "mlp", True, "mixed_float16"),
])
def test_the_backend_tables_precision_is_one_that_every_backend_runs(capabilities, bfloat16,
                                                                     model, xla, expected):
  precision, reason = benchmark.shared_precision(model, xla, capabilities, bfloat16)
  assert precision == expected
  assert ("tensorflow" in reason) == (bfloat16 is not None and not capabilities)


@pytest.mark.slow
def test_another_backend_is_timed_in_a_process_of_its_own(tmp_path, capfd):
  from trainer.bench import backend_benchmark  # pylint: disable=g-import-not-at-top
  rows = backend_benchmark.measure_backend("jax", model_benchmark.TINY_WORKLOADS[:1],
                                           {"mlp/32": "mixed_bfloat16"}, str(tmp_path / "logs"),
                                           str(tmp_path / "jax.json"))
  peers = rows["mlp/32"]
  assert peers["harness"]["precision"] == "mixed_bfloat16"  # The row's, not JAX's auto.
  assert peers["harness"]["strategy"] == "default" and peers["harness"]["replicas"] == 1
  assert peers["harness"]["examples_per_sec"] > 0 and peers["fit"]["examples_per_sec"] > 0
  assert capfd.readouterr().out.startswith("  mlp/32 on jax (mixed_bfloat16): harness ")
  assert "Epoch" in (tmp_path / "logs" / "mlp-32-jax.log").read_text()


@pytest.mark.parametrize("workload", model_benchmark.QUICK_WORKLOADS, ids=lambda w: w.name)
def test_the_harness_trains_every_warm_up_and_timed_step_in_whole_calls(workload):
  config = model_benchmark.settings_for(workload)
  loop = config.loop
  steps = workload.warmup_steps + workload.timed_steps
  # One synthetic epoch of the mlp is 58 batches: a run of one epoch would stop short of them.
  epoch = min(loop.max_steps_per_epoch,
              input_pipeline.SYNTHETIC_TRAIN_SIZE // workload.batch_size)
  assert steps <= loop.epochs * epoch < steps + epoch
  assert loop.max_steps_per_epoch % workload.warmup_steps == 0
  assert loop.steps_per_loop == config.output.log_every == workload.warmup_steps
  assert not config.output.export_saved_model  # A resnet50's would take seconds of the run.


def test_the_harness_rate_leaves_out_its_first_warm_up_steps_as_fit_does():
  workload = model_benchmark.Workload("mlp", (28, 28, 1), 1024, 50, 100)
  # Windows of 45 steps (after a first call of one pack of 5), then 50 and 50.
  results = {"examples_per_sec_windows": [10_000.0, 30_000.0, 60_000.0],
             "steps_per_xla_call": 5, "examples_per_sec": 25_000.0}
  assert model_benchmark.steady_rate(results, workload) == pytest.approx(40_000.0)
  # A first call that was the whole warm-up is in no window: every window counts.
  results["steps_per_xla_call"] = 50
  assert model_benchmark.steady_rate(results, workload) == pytest.approx(3 / (
      1 / 10_000 + 1 / 30_000 + 1 / 60_000))
