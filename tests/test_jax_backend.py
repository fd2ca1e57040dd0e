"""--backend=jax: the harness on Keras's JAX backend trains, distributes and exports as on
TensorFlow. Every JAX run is a process of its own (Keras keeps the backend of its first import;
this test process has TensorFlow's)."""

import glob
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from tests import processes
from tests.processes import ROOT
from tests.test_resnet import WIRING_ONLY
from trainer import config as config_lib
from trainer import errors
from trainer import evaluate
from trainer.bench import flops
from trainer.distribute import keras_backend
from trainer.models import factory
from trainer.models import resnet
from trainer.records import export
from trainer.records import run_record
from trainer.records import workdir as workdir_lib


def test_cpu_devices_become_xlas_host_device_count_replacing_an_earlier_one():
  flags = "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=8"
  assert keras_backend.with_host_devices(flags, 2) == (
      "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=2")
  assert keras_backend.with_host_devices("", 4) == "--xla_force_host_platform_device_count=4"


def test_an_unknown_backend_is_refused_with_the_choices():
  with pytest.raises(errors.UserError, match="choose tensorflow or jax"):
    config_lib.Config.from_flags(backend="torch")


def test_a_workdir_of_one_backend_refuses_a_resume_on_the_other(tmp_path):
  saved = json.loads(json.dumps(config_lib.Config.from_flags(backend="jax").to_flags()))
  with pytest.raises(errors.UserError, match="backend: 'jax' in the saved run, 'tensorflow'"):
    workdir_lib.check_same_math(saved, config_lib.Config.from_flags(
        backend="tensorflow").to_flags(),
                                str(tmp_path))
  del saved["backend"]  # A config.json from before the setting: TensorFlow's.
  workdir_lib.check_same_math(saved, config_lib.Config.from_flags(backend="tensorflow").to_flags(),
                              str(tmp_path))


def test_asking_for_jax_without_it_installed_is_one_line_and_exit_2(tmp_path):
  hide_jax = ("import importlib.util, runpy, sys; find = importlib.util.find_spec; "
              "importlib.util.find_spec = lambda name, *a: None if name == 'jax' "
              "else find(name, *a); sys.argv = ['trainer.main'] + sys.argv[1:]; "
              "runpy.run_module('trainer.main', run_name='__main__')")
  done = subprocess.run([sys.executable, "-c", hide_jax, "--backend=jax",
                         f"--workdir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True,
                        text=True, timeout=60)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      "error: --backend=jax needs JAX, which is not installed: pip install -e '.[jax]' (GPUs: "
      "'.[jax-cuda]'), or leave --backend out."]
  assert not os.path.exists(tmp_path / "run")


def _mlp(api, fashion_mnist_dir, workdir, **settings):
  return {"api": api, "dataset": "fashion_mnist", "data_dir": fashion_mnist_dir, "epochs": 1,
          "batch_size": 128, "strategy": "default", "progress": "none",
          "workdir": str(workdir), **settings}


def _resnet18(api, workdir, strategy="default"):
  """The fixture's resnet18 runs: WIRING_ONLY's blocks, the APIs' wiring being what they check."""
  return dict(api=api, model="resnet18", resnet_blocks_per_stage=WIRING_ONLY[1],
              dataset="synthetic", image_shape=(32, 32, 3), num_test_examples=16, batch_size=8,
              epochs=1, max_steps_per_epoch=3, strategy=strategy, progress="none",
              workdir=str(workdir))


@pytest.fixture(scope="module")
def jax_runs(fashion_mnist_dir, tmp_path_factory) -> dict:
  """name -> results.json (and "workdir") of runs trained in one JAX process: the mlp one epoch
  of Fashion-MNIST at batch 128 in each API and mirrored over two host devices, resnet18
  (WIRING_ONLY) three steps in each API (the subclass under --strategy=one_device), and 150
  steps of the mlp for each optimizer, schedule and precision the recipe's kill test leaves
  out."""
  root = tmp_path_factory.mktemp("jax")
  runs = {f"mlp_{api}": _mlp(api, fashion_mnist_dir, root / f"mlp_{api}")
          for api in config_lib.APIS}
  runs["mlp_mirrored"] = _mlp("functional", fashion_mnist_dir, root / "mlp_mirrored",
                              strategy="mirrored")
  # one_device on the process's two host devices: one replica, on which the subclass must
  # step as the other APIs do on the default strategy's device.
  runs.update({f"resnet18_{api}": _resnet18(
      api, root / f"resnet18_{api}", "one_device" if api == "subclass" else "default")
               for api in config_lib.APIS})
  # The parts of the recipe the kill test in test_resume.py does not run (it runs sgd, warm-up,
  # cosine, smoothing, clipping, accumulation, EMA and keep_best): adamw with its schedule in
  # bfloat16, and float16's loss scaling.
  short = dict(epochs=3, max_steps_per_epoch=50, log_every=50)
  runs["adamw_bfloat16"] = _mlp("functional", fashion_mnist_dir, root / "adamw_bfloat16",
                                **short, optimizer="adamw", weight_decay=0.01,
                                lr_schedule="step", lr_drops=(2,), warmup_epochs=1,
                                lr_scaling="linear", profile_steps=(11, 20),
                                precision="mixed_bfloat16")
  runs["mixed_float16"] = _mlp("functional", fashion_mnist_dir, root / "mixed_float16", **short,
                               precision="mixed_float16")
  # The export tests read mlp_functional's; jax2tf's SavedModels of the others would repeat its
  # tracing, but for a bfloat16 model's and a ResNet's.
  for name, settings in runs.items():
    settings["export_saved_model"] = name in ("mlp_functional", "adamw_bfloat16",
                                              "resnet18_subclass")
  with open(root / "runs.json", "w") as f:
    # Two host devices for the process, so the mirrored run spans two replicas.
    json.dump([{"backend": "jax", "cpu_devices": 2, **settings} for settings in runs.values()],
              f)
  done = processes.run_module("tests.runs_in_a_process", str(root / "runs.json"),
                              timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return {name: {**run_record.read_results(settings["workdir"]), "workdir": settings["workdir"]}
          for name, settings in runs.items()}


@pytest.mark.slow
def test_the_mlp_trains_past_0_80_in_one_epoch_identically_in_the_three_apis(jax_runs):
  results = [jax_runs[f"mlp_{api}"] for api in config_lib.APIS]
  assert {r["backend"] for r in results} == {"jax"}
  assert results[0]["test_accuracy"] > 0.80
  assert len({r["weights_sha256"] for r in results}) == 1
  assert len({r["test_accuracy"] for r in results}) == 1


@pytest.mark.slow
def test_mirrored_over_two_host_devices_learns_as_one_device(jax_runs):
  mirrored, one = jax_runs["mlp_mirrored"], jax_runs["mlp_functional"]
  assert (mirrored["num_replicas"], one["num_replicas"]) == (2, 1)
  # The same global batches; only the order of the sums over the batch differs.
  assert mirrored["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=0.01)


@pytest.mark.slow
def test_resnet18_steps_identically_in_the_three_apis(jax_runs):
  results = [jax_runs[f"resnet18_{api}"] for api in config_lib.APIS]
  assert [r["steps"] for r in results] == [3, 3, 3]
  assert len({r["weights_sha256"] for r in results}) == 1


@pytest.mark.slow
def test_a_steps_flops_are_counted_as_on_tensorflow_and_make_an_mfu_against_the_named_peak(
    jax_runs, monkeypatch):
  # The mlp at batch 128 in every API and over two devices (the global batch's), as
  # test_mfu.py's TensorFlow runs count it; resnet18 as TensorFlow counts the same model.
  for name in ("mlp_functional", "mlp_subclass", "mlp_mirrored"):
    assert jax_runs[name]["flops_per_step"] == 128 * 818_176, name
  # The fixture's resnet18 is WIRING_ONLY (its runs check the wiring): count the same.
  monkeypatch.setitem(resnet.RESNET_SPECS, "resnet18", WIRING_ONLY)
  model = factory.build_model("resnet18", "functional", (32, 32, 3), 10)
  assert jax_runs["resnet18_functional"]["flops_per_step"] == flops.train_step_flops(
      model, False, (32, 32, 3), 8)
  for name in ("mlp_functional", "mlp_mirrored", "resnet18_subclass"):
    results = jax_runs[name]
    assert 0 < results["mfu"] <= 1 and results["peak_flops"] == 1e13  # conftest's, one machine.
    assert results["goodput"]["processes"] == 1 and results["goodput"]["lost_steps"] == 0


@pytest.mark.slow
def test_the_mlp_packs_steps_into_one_call_and_convnets_on_cpus_do_not(jax_runs):
  assert jax_runs["mlp_functional"]["steps_per_xla_call"] > 1
  assert jax_runs["resnet18_subclass"]["steps_per_xla_call"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("export_format", ["keras", "saved_model"])
def test_a_jax_runs_exports_reproduce_its_test_accuracy_on_tensorflow(jax_runs, export_format,
                                                                       tmp_path):
  results = jax_runs["mlp_functional"]
  figures = evaluate.evaluate_export(results["workdir"], export_format)
  assert figures["num_examples"] == 10_000
  assert figures["test_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-4)


@pytest.mark.slow  # It reads the JAX runs, a process of its own: tens of seconds.
def test_one_device_trains_one_replica_of_the_hosts_devices(jax_runs):
  results = jax_runs["resnet18_subclass"]  # Its weights: test_resnet18_steps_identically_...
  assert (results["strategy"], results["num_replicas"]) == ("one_device", 1)


@pytest.mark.slow  # It reads the JAX runs, a process of its own: tens of seconds.
def test_a_jax_export_serves_on_cpus_and_cuda_gpus(jax_runs):
  # jax2tf lowers for the plan's platforms; a GPU run's export without "cpu" would not serve on
  # a CPU, and this CPU run's now serves on GPUs too.
  loaded = export.load_saved_model(jax_runs["mlp_functional"]["workdir"])
  graph = loaded.serve.get_concrete_function(
      tf.TensorSpec([None, 28, 28, 1], tf.float32)).graph
  graphs = [graph] + [function.graph for function in graph._functions.values()]  # pylint: disable=protected-access
  platforms = {platform.decode() for each in graphs for operation in each.get_operations()
               if operation.type == "XlaCallModule"
               for platform in operation.get_attr("platforms")}
  assert platforms == {"CPU", "CUDA"}


@pytest.mark.slow
@pytest.mark.parametrize("name, precision", [("adamw_bfloat16", "mixed_bfloat16"),
                                             ("mixed_float16", "mixed_float16")])
def test_the_other_optimizers_schedules_and_precisions_learn_on_jax(jax_runs, name, precision):
  results = jax_runs[name]
  assert results["steps"] == 150  # 3 epochs of 50.
  assert results["precision"] == precision
  assert results["test_accuracy"] > 0.70
  if name == "mixed_float16":  # Loss scaling on the global gradient, as on TensorFlow.
    assert results["loss_scale"] > 1
  else:
    assert results["loss_scale"] is None


@pytest.mark.slow
def test_profile_steps_write_a_profile_of_the_jax_steps(jax_runs):
  workdir = jax_runs["adamw_bfloat16"]["workdir"]
  traces = glob.glob(os.path.join(workdir, "plugins", "profile", "*", "*.xplane.pb"))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
