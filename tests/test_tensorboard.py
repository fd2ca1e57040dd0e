"""What a user opens in TensorBoard: the HParams table and the profile, from a real server.

Two runs that differ only in --epochs, one with --profile_steps, served by one real TensorBoard
server (with the profile plugin of the [profile] extra) and read over HTTP as its pages do.
"""

import glob
import gzip
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.processes import ROOT
from trainer import config as config_lib
from trainer import train
from trainer.records import run_record

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import launch_local  # pylint: disable=g-import-not-at-top,wrong-import-position


def _request(url: str, body: dict = None):
  data = json.dumps(body).encode() if body is not None else None
  request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(request, timeout=10) as response:
    body = response.read()
    if response.headers.get("Content-Encoding") == "gzip":
      body = gzip.decompress(body)
    return json.loads(body)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  """(base URL, logdir) of a real TensorBoard over two runs: "short" (1 epoch, steps 5 to 8
  profiled) and "long" (2 epochs), otherwise the same settings."""
  pytest.importorskip("xprof", reason="the [profile] extra is not installed")
  logdir = tmp_path_factory.mktemp("tensorboard")
  small = config_lib.Config.from_flags(dataset="synthetic", epochs=1, batch_size=64,
                            max_steps_per_epoch=20, strategy="default", log_every=10)
  train.train_and_evaluate(small.replace(workdir=str(logdir / "short"), profile_steps=(5, 8)))
  train.train_and_evaluate(small.replace(workdir=str(logdir / "long"), epochs=2))
  port = launch_local.free_ports(1)[0]
  process = subprocess.Popen(
      [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}", "--host=127.0.0.1",
       f"--port={port}", "--load_fast=false"],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  base = f"http://127.0.0.1:{port}"
  deadline = time.monotonic() + 90
  while True:
    try:
      _request(f"{base}/data/plugins_listing")
      break
    except OSError:
      assert process.poll() is None, process.communicate()[0][-2000:]
      assert time.monotonic() < deadline, "TensorBoard did not start in 90 s"
      time.sleep(0.5)
  yield base, logdir
  process.terminate()
  process.wait(timeout=30)


@pytest.mark.slow
def test_runs_that_differ_only_in_epochs_are_two_rows_with_epochs_shown_first(server):
  base, logdir = server
  experiment = _request(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
  differing = [info["name"] for info in experiment["hparamInfos"] if info.get("differs")]
  # The HPARAMS tab ticks the first five columns, differing ones first.
  assert differing == ["epochs"]
  names = {info["name"] for info in experiment["hparamInfos"]}
  assert {"learning_rate", "lr_schedule", "max_steps_per_epoch", "seed", "strategy",
          "precision", "global_batch_size", "model", "api"} <= names

  groups = _request(f"{base}/data/plugin/hparams/session_groups", {
      "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN"], "colParams": [],
      "startIndex": 0, "sliceSize": 100})["sessionGroups"]
  rows = {group["name"]: group["hparams"] for group in groups}
  # One row per run, named by the run's folder first.
  assert set(rows) == {f"short ({logdir})", f"long ({logdir})"}
  by_epochs = {row["epochs"]: row for row in rows.values()}
  assert set(by_epochs) == {"1", "2"}  # Shown as integers, not 1.0000.
  assert by_epochs["1"]["global_batch_size"] == "64"
  assert by_epochs["1"]["learning_rate"] == "0.001"


def test_runs_that_differ_in_strategy_and_seed_differ_in_hparams_only_in_what_the_user_chose():
  # The HPARAMS table ticks the first five differing columns by name: derived ones such as
  # num_replicas or jit_compile (resolved) would come before seed and strategy.
  def entry(strategy, num_replicas, **changes):
    settings = config_lib.RunSettings(
        config=config_lib.Config.from_flags(dataset="synthetic", strategy=strategy, **changes),
        strategy=strategy,
        num_replicas=num_replicas, precision="float32", precision_reason="auto", device="CPU",
        is_chief=True)
    assert settings.jit_compile == (num_replicas == 1)  # Derived, and different.
    hparams = {"model": "mlp", "api": "functional", "strategy": strategy,
               "num_replicas": num_replicas, "precision": "float32", "device": "CPU",
               "global_batch_size": 64, "dataset": "synthetic", "hidden_units": 256,
               "seed": changes.get("seed", 0)}
    return run_record.hparams_entry(settings, hparams)

  default = entry("default", 1)
  mirrored = entry("mirrored", 2, cpu_devices=2, seed=1)
  assert {name for name in default if default[name] != mirrored.get(name)} == {
      "cpu_devices", "seed", "strategy"}
  assert default["jit_compile"] == "auto" and default["steps_per_loop"] == "auto"


@pytest.mark.slow
def test_a_profile_of_steps_a_to_b_is_listed_in_the_profile_tab(server):
  base, logdir = server
  traces = glob.glob(os.path.join(str(logdir), "short", "plugins", "profile", "*",
                                  "*.xplane.pb"))
  assert len(traces) == 1, traces
  assert not glob.glob(os.path.join(str(logdir), "long", "plugins", "profile"))
  plugins = _request(f"{base}/data/plugins_listing")
  assert plugins["profile"]["enabled"], plugins["profile"]
  session = os.path.basename(os.path.dirname(traces[0]))
  runs = _request(f"{base}/data/plugin/profile/runs")
  assert any(session in run and "short" in run for run in runs), runs
