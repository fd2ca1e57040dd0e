"""Comparing runs: a real TensorBoard server and the report files, both on the suite's shared
finished runs (conftest), and a sweep run again."""

import contextlib
import csv
import functools
import json
import os
import shutil
import subprocess
import sys
import threading
from typing import Iterator
import urllib.parse
import urllib.request

import pytest

from tests.processes import ROOT
from trainer import compare
from trainer import config as config_lib
from trainer import sweep


def _get_json(url: str, data: bytes = None):
  request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(request, timeout=10) as response:
    return json.loads(response.read())


@contextlib.contextmanager
def _tensorboard(logdir: str, monkeypatch) -> Iterator[str]:
  """A real TensorBoard server on 127.0.0.1 over `logdir`, as the tensorboard command starts
  it but in this process, whose TensorFlow it shares (its own process imports TensorFlow
  again: seconds); every run is read before it serves. Yields its data URL."""
  from absl.flags import argparse_flags  # pylint: disable=g-import-not-at-top
  from tensorboard import program  # pylint: disable=g-import-not-at-top
  # Its flags alone: this process's absl flags (trainer.compare's --logdir too) are not its own.
  monkeypatch.setattr(program.argparse_flags, "ArgumentParser", functools.partial(
      argparse_flags.ArgumentParser, inherited_absl_flags=None))
  board = program.TensorBoard()
  board.configure(argv=[None, f"--logdir={logdir}", "--host=127.0.0.1", "--port=0",
                        "--load_fast=false", "--reload_task=blocking", "--reload_interval=0"])
  server = board._make_server()  # pylint: disable=protected-access  # launch() cannot stop it.
  thread = threading.Thread(target=server.serve_forever, name="TensorBoard")
  thread.start()
  try:
    yield server.get_url() + "data/plugin"
  finally:
    server.shutdown()
    server.server_close()
    thread.join(timeout=30)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:html5lib's sanitizer is deprecated:DeprecationWarning")
def test_tensorboard_server_serves_the_runs_scalars_and_hparams(finished_runs, monkeypatch):
  logdir = os.path.dirname(finished_runs["functional"][0].output.workdir)
  run = "functional"
  results = finished_runs[run][1]
  with _tensorboard(logdir, monkeypatch) as base:
    tags = _get_json(f"{base}/scalars/tags")
    assert "accuracy" in tags[f"{run}/eval"] and "loss" in tags[f"{run}/train"]
    for tag in ("accuracy", "loss"):
      query = urllib.parse.urlencode({"run": f"{run}/eval", "tag": tag})
      points = _get_json(f"{base}/scalars/scalars?{query}")
      assert [point[1] for point in points] == [100, 200]  # [wall_time, step, value] per epoch.
      # The last is the run's final evaluation, of all its test examples.
      assert points[-1][2] == pytest.approx(results[f"test_{tag}"])

    groups = _get_json(f"{base}/hparams/session_groups", json.dumps(
        {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN"],
         "colParams": [], "startIndex": 0, "sliceSize": 100}).encode())
  sessions = {session["name"]: group for group in groups["sessionGroups"]
              for session in group["sessions"]}
  assert len(sessions) == len(config_lib.APIS)
  group = sessions[run]
  assert group["hparams"]["api"] == "functional" and group["hparams"]["seed"] == "0"
  metrics = {value["name"]["tag"]: value["value"] for value in group["metricValues"]}
  assert metrics["test_accuracy"] == pytest.approx(results["test_accuracy"])
  assert metrics["examples_per_sec"] > 0


@pytest.mark.slow
def test_report_writes_table_csv_plots_and_a_verdict_per_pair_of_apis(finished_runs, tmp_path):
  # One seed per API here: the verdicts over seeds are tested on given figures below.
  logdir = os.path.dirname(finished_runs["functional"][0].output.workdir)
  report = compare.build_report(logdir, str(tmp_path), target_accuracy=0.5)
  assert report["num_runs"] == 3
  table = (tmp_path / "report.md").read_text()
  assert table.count("| functional | tensorflow | default | float32 |") == 1
  assert "| subclass | tensorflow | default | float32 |" in table and "| 64 | 1 |" in table
  assert "- functional vs subclass: too few seeds to test" in table
  with open(tmp_path / "report.csv") as f:
    rows = list(csv.DictReader(f))
  assert [row["api"] for row in rows] == ["functional", "sequential", "subclass"]
  for row in rows:
    assert 0 < float(row["test_accuracy_mean"]) <= 1 and float(row["examples_per_sec_median"]) > 0
    assert 0 < float(row["goodput_median"]) < 1 and 0 < float(row["mfu_median"]) <= 1
  assert "| goodput (median) | MFU (median) |" in table
  for picture in ("accuracy_per_epoch.png", "throughput.png", "goodput.png"):
    assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def run_of(api: str, seed: int, test_accuracy: float, strategy: str = "default",
           model: str = "mlp", backend: str = "tensorflow",
           examples_per_sec: float = 1000.0) -> dict:
  """The fields of results.json that compare reads, for one run."""
  return {"model": model, "api": api, "backend": backend, "seed": seed, "strategy": strategy,
          "precision": "float32", "device": "CPU", "global_batch_size": 64,
          "dataset": "synthetic", "test_accuracy": test_accuracy,
          "examples_per_sec": examples_per_sec,
          "eval_accuracy": [(0.0, 10, 0.5), (1.0, 20, 0.7)], "start_wall_time": 0.0}


def test_identical_runs_are_reported_as_no_difference():
  runs = [run_of(api, seed, 0.8 + seed / 100)
          for api in ("functional", "sequential") for seed in range(3)]
  assert "identical test accuracy for every seed" in compare.compare_apis(runs, 0.05)[0]


def test_welch_test_separates_a_real_difference_from_noise():
  noisy = [run_of("a", s, 0.80 + d) for s, d in enumerate([0.01, -0.01, 0.02])] + [
      run_of("b", s, 0.80 + d) for s, d in enumerate([0.00, 0.015, -0.012])]
  assert "within seed-to-seed noise" in compare.compare_apis(noisy, 0.05)[0]
  apart = [{**run, "test_accuracy": run["test_accuracy"] + (0.1 if run["api"] == "b" else 0)}
           for run in noisy]
  assert "beyond seed noise" in compare.compare_apis(apart, 0.05)[0]


@pytest.mark.slow
def test_a_sweep_run_again_skips_finished_runs_and_runs_the_rest(finished_runs, tmp_path):
  # A stopped sweep leaves its finished runs' workdirs, which the command, run again, skips:
  # here the first run's is a finished run's copy.
  shutil.copytree(finished_runs["functional"][0].output.workdir, tmp_path / "functional-s0")
  again = subprocess.run(
      [sys.executable, "-m", "trainer.sweep", f"--root={tmp_path}",
       "--apis=functional,sequential", "--seeds=1", "--", "--dataset=synthetic", "--epochs=1",
       "--max_steps_per_epoch=5", "--jit_compile=false"],
      cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert again.returncode == 0, again.stderr[-2000:]
  lines = again.stdout.splitlines()
  assert "[1/2] functional-s0: finished before, skipped" in lines
  assert any(line.startswith("[2/2] sequential-s0: test accuracy")
             for line in lines)
  assert (tmp_path / "sequential-s0" / "results.json").exists()
  log = (tmp_path / "sequential-s0" / "trainer.log").read_text()  # The whole output, kept.
  assert "--workdir=" in log and "test accuracy" in log and "[exit code 0]" in log


@pytest.mark.parametrize("stderr, message", [
    ("I0000 start\nerror: --batch_size=33 does not divide\nW0000 teardown\n",
     "--batch_size=33 does not divide"),
    ("Traceback (most recent call last):\n  File x\nValueError: bad shape\nI0000 after\n",
     "ValueError: bad shape"),
    ("", "(no output)"),
])
def test_a_failed_sweep_run_shows_its_own_error_line(stderr, message):
  assert sweep.failure_message(stderr) == message


def test_sweep_matrix_covers_every_combination():
  runs = sweep.matrix(["functional", "subclass"], 3, ["default", "mirrored"], ["float32"],
                      ["32", "64"])
  assert len(runs) == 2 * 3 * 2 * 2
  assert len({sweep.run_name(run) for run in runs}) == len(runs)
  assert sweep.run_name(runs[0]) == "functional-default-float32-b32-s0"


def test_a_sweep_over_backends_names_each_run_by_its_backend():
  runs = sweep.matrix(["functional"], 1, backends=["tensorflow", "jax"])
  assert [sweep.run_name(run) for run in runs] == ["functional-tensorflow-s0",
                                                   "functional-jax-s0"]
  assert runs[1]["backend"] == "jax"


def test_each_backend_is_set_against_tensorflow_per_api():
  runs = [run_of(api, seed, 0.8 + noise, backend=backend, examples_per_sec=rate)
          for backend, rate in (("tensorflow", 1000.0), ("jax", 1800.0))
          for api in ("functional", "subclass")
          for seed, noise in enumerate((0.01, -0.01, 0.0))]
  lines = compare.compare_backends(runs, 0.05)
  assert lines == [
      "- [functional] jax vs tensorflow: 1.80x the examples/s (median); test accuracy identical "
      "test accuracy for every seed (3 seeds): no difference at all.",
      "- [subclass] jax vs tensorflow: 1.80x the examples/s (median); test accuracy identical "
      "test accuracy for every seed (3 seeds): no difference at all."]
  # The APIs are compared within each backend, never across backends.
  assert [line.split("]")[0] for line in compare.compare_apis(runs, 0.05)] == [
      "- [jax", "- [tensorflow"]


def test_sweep_leaves_unlisted_flags_to_the_trainer_flags():
  runs = sweep.matrix(["subclass"], 2)
  assert runs == [{"api": "subclass", "seed": "0"}, {"api": "subclass", "seed": "1"}]
  assert sweep.run_name(runs[1]) == "subclass-s1"


def two_strategy_sweep():
  """2 APIs x 2 strategies x 3 seeds: identical APIs under default, far apart under mirrored."""
  return [run_of(api, seed, 0.8 + noise + (gap if api == "subclass" else 0.0), strategy)
          for strategy, gap in (("default", 0.0), ("mirrored", 0.1))
          for api in ("functional", "subclass")
          for seed, noise in enumerate((0.01, -0.01, 0.0))]


def test_a_sweep_over_strategies_is_tested_and_plotted_per_strategy(tmp_path):
  lines = compare.compare_apis(two_strategy_sweep(), 0.05)
  assert len(lines) == 2
  assert lines[0].startswith("- [default] functional vs subclass: identical test accuracy")
  assert lines[1].startswith("- [mirrored] functional vs subclass:")
  assert "beyond seed noise" in lines[1]
  drawn = compare.plot_accuracy(two_strategy_sweep(), str(tmp_path / "accuracy.png"))
  # Every run here has the same two-epoch curve: each repeat says which curve it equals.
  assert drawn["labels"] == [
      "functional, default (3 seeds)",
      "functional, mirrored (3 seeds); same curve as functional, default",
      "subclass, default (3 seeds); same curve as functional, default",
      "subclass, mirrored (3 seeds); same curve as functional, default"]
  assert drawn["epoch_ticks"] and all(tick == int(tick) for tick in drawn["epoch_ticks"])
  assert drawn["cut"] == [] and png_size(tmp_path / "accuracy.png") == (1200, 800)


def test_the_throughput_plot_shows_the_spread_over_seeds_and_the_machine(tmp_path):
  runs = [{**run_of("functional", seed, 0.8), "examples_per_sec": rate}
          for seed, rate in enumerate((900.0, 1000.0, 1300.0))]
  drawn = compare.plot_throughput(compare.summarize(runs, 0.85), str(tmp_path / "t.png"))
  assert drawn["whiskers"] == [[100.0], [300.0]]  # Median 1000, min 900, max 1300.
  assert drawn["title"] == "Throughput on CPU"
  # Readable: 1200x800 pixels, and no label cut at the figure's edge.
  assert drawn["cut"] == [] and png_size(tmp_path / "t.png") == (1200, 800)


def png_size(path) -> tuple:
  """(width, height) from a PNG's IHDR chunk."""
  with open(path, "rb") as f:
    header = f.read(24)
  return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_compare_tests_apis_within_each_model_not_across_models():
  runs = [run_of(api, seed, 0.8 + seed / 100 + (0.1 if model == "cnn" else 0.0), model=model)
          for model in ("mlp", "cnn") for api in ("functional", "sequential") for seed in range(3)]
  verdicts = compare.compare_apis(runs, 0.05)
  assert len(verdicts) == 2 and all("identical test accuracy" in line for line in verdicts)
  assert [row["model"] for row in compare.summarize(runs, 0.85)] == ["cnn"] * 2 + ["mlp"] * 2


def test_sweep_runs_each_built_in_model_in_every_api_and_your_own_once():
  runs = sweep.matrix(["functional", "subclass"], 1,
                      models=["mlp", "cnn", "examples/two_branch_functional.py:build"])
  assert [sweep.run_name(run) for run in runs] == [
      "functional-s0", "subclass-s0", "cnn-functional-s0", "cnn-subclass-s0",
      "two_branch_functional.build-s0"]
  assert runs[-1] == {"model": "examples/two_branch_functional.py:build", "seed": "0"}


def test_sweep_runs_a_resnet_in_every_api_and_a_keras_application_once():
  runs = sweep.matrix(["sequential", "functional"], 1,
                      models=["resnet18", "applications.MobileNetV2"])
  assert [sweep.run_name(run) for run in runs] == [
      "resnet18-sequential-s0", "resnet18-functional-s0", "applications.MobileNetV2-s0"]
  # --models accepts them, and refuses a model the trainer does not know.
  accepts = sweep.FLAGS["models"].validators[0].checker
  assert accepts(["resnet50", "applications.ResNet50", "mlp", "nets.py:build"])
  assert not accepts(["resnet101"])


def _goodput(wall, **parts):
  figures = dict.fromkeys(compare.GOODPUT_PARTS, 0.0)
  figures.update(parts, wall_s=wall, fraction=parts.get("productive_s", 0.0) / wall)
  return figures


def test_the_goodput_plot_stacks_each_configurations_parts_to_its_whole_time(tmp_path):
  # Two seeds of one configuration (their seconds pooled) and one run of another; a run
  # recorded before goodput existed is left out of its configuration's bar.
  runs = [{**run_of("functional", 0, 0.8), "goodput": _goodput(10.0, productive_s=6.0,
                                                               startup_s=4.0)},
          {**run_of("functional", 1, 0.8), "goodput": _goodput(30.0, productive_s=12.0,
                                                               lost_s=3.0, startup_s=15.0)},
          run_of("functional", 2, 0.8),
          {**run_of("subclass", 0, 0.8), "goodput": _goodput(5.0, productive_s=5.0)}]
  rows = compare.summarize(runs, 0.5)
  drawn = compare.plot_goodput(rows, str(tmp_path / "goodput.png"))
  assert drawn["shares"] == {
      "functional": {**dict.fromkeys(compare.GOODPUT_PARTS, 0.0), "productive_s": 0.45,
                     "lost_s": 0.075, "startup_s": 0.475},
      "subclass": {**dict.fromkeys(compare.GOODPUT_PARTS, 0.0), "productive_s": 1.0}}
  assert drawn["cut"] == []
  assert [row["goodput_median"] for row in rows] == [0.5, 1.0]  # Of 0.6 and 0.4; of 1.0.
