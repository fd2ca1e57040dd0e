"""Your own model: --model=file.py:function or module:function, each API, and every bad plug-in."""

import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time

import keras
import pytest

from tests import processes
from trainer import errors
from trainer import evaluate
from trainer.models import own_model
from trainer.records import export
from trainer import train

EXAMPLES = os.path.join(processes.ROOT, "examples")
SHAPE = (28, 28, 1)


def _build(spec: str, image_shape=SHAPE, num_classes=10, precision="float32"):
  return own_model.build(own_model.load_function(spec), image_shape, num_classes, precision,
                         seed=0)


def _write(tmp_path, body: str, name: str = "user_net") -> str:
  path = tmp_path / f"{name}.py"
  path.write_text("import keras\n\n" + textwrap.dedent(body))
  return str(path)


@pytest.mark.parametrize("example, api, from_logits", [
    ("sequential_convnet.py", "sequential", True),
    ("two_branch_functional.py", "functional", False),
    ("residual_subclass.py", "subclass", False),
])
def test_each_example_is_built_with_its_api_detected_and_its_outputs_read(example, api,
                                                                          from_logits):
  built = _build(os.path.join(EXAMPLES, example) + ":build")
  assert (built.api, built.from_logits) == (api, from_logits)
  assert built.model.count_params() > 0  # The first call built even the subclass's weights.


def test_a_module_path_names_the_function_too():
  assert _build("examples.two_branch_functional:build").api == "functional"


def test_the_data_shape_and_class_count_reach_the_function(tmp_path):
  spec = _write(tmp_path, """
      def build(input_shape, num_classes):
        return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                 keras.layers.Dense(num_classes, activation="softmax")])
      """) + ":build"
  built = _build(spec, image_shape=(8, 6, 3), num_classes=4)
  assert built.model.count_params() == 8 * 6 * 3 * 4 + 4


def test_mixed_precision_reaches_the_users_layers_and_the_policy_is_restored():
  built = _build(os.path.join(EXAMPLES, "two_branch_functional.py") + ":build",
                 precision="mixed_bfloat16")
  assert built.model.get_layer("conv1").compute_dtype == "bfloat16"
  assert keras.config.dtype_policy().name == "float32"


def test_a_model_that_overrides_train_step_is_warned_about(tmp_path, caplog):
  spec = _write(tmp_path, """
      class Custom(keras.Sequential):
        def train_step(self, data):
          raise AssertionError("never called")

      def build(input_shape, num_classes):
        return Custom([keras.Input(input_shape), keras.layers.Flatten(),
                       keras.layers.Dense(num_classes)])
      """, name="custom_step") + ":build"
  with caplog.at_level(logging.WARNING):
    _build(spec)
  assert "overrides train_step" in caplog.text


@pytest.mark.parametrize("body, spec_suffix, message", [
    (None, "missing_file.py:build", "there is no file"),
    ("def build(input_shape, num_classes):\n  pass\n", ":make",
     "has no function 'make'; it defines build"),
    ("def build(input_shape, num_classes):\n  raise ValueError('needs colour images')\n",
     ":build", "raised ValueError: needs colour images"),
    ("def build(input_shape, num_classes):\n  return 'a model'\n", ":build",
     "returned str, not a keras.Model"),
    ("def build(input_shape, num_classes):\n  return keras.Sequential([keras.Input(input_shape),"
     " keras.layers.Flatten(), keras.layers.Dense(3)])\n", ":build",
     r"outputs shape \(batch, 3\); it must output \(batch, 10\)"),
    ("def build(input_shape, num_classes):\n  return keras.Sequential([keras.Input((32, 32, 3)),"
     " keras.layers.Flatten(), keras.layers.Dense(num_classes)])\n", ":build",
     r"cannot take the data's images, float32 batches of shape \(batch, 28, 28, 1\)"),
    ("import no_such_package_here\n", ":build",
     "importing bad_net failed: No module named 'no_such_package_here'"),
    ("def build(:\n", ":build", "importing bad_net raised SyntaxError"),
])
def test_a_bad_plug_in_is_one_clear_user_error(tmp_path, body, spec_suffix, message):
  if body is None:
    spec = str(tmp_path / spec_suffix)
  else:
    (tmp_path / "bad_net.py").write_text("import keras\n" + body)
    spec = str(tmp_path / "bad_net.py") + spec_suffix
  sys.modules.pop("bad_net", None)
  with pytest.raises(errors.UserError, match=message):
    _build(spec)


def test_a_module_that_is_not_there_is_named():
  with pytest.raises(errors.UserError, match="there is no module no_such.models to import"):
    own_model.load_function("no_such.models:build")


def test_a_bad_plug_in_stops_the_run_with_one_line_before_anything_is_written(small_config,
                                                                            tmp_path, capsys):
  # As trainer.main runs it: a UserError inside shown_as_one_line is one "error:" line and exit
  # 2 (tests/test_main.py runs that in a real process for bad data and a bad batch).
  bad = _write(tmp_path, """
      def build(input_shape, num_classes):
        return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                 keras.layers.Dense(7)])
      """, name="seven_outputs")
  with pytest.raises(SystemExit) as exited, errors.shown_as_one_line():
    train.train_and_evaluate(small_config.replace(model=f"{bad}:build", api=None))
  assert exited.value.code == errors.BAD_INPUT
  stderr = capsys.readouterr().err
  assert "Traceback" not in stderr
  error_lines = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(error_lines) == 1 and "it must output (batch, 10)" in error_lines[0]
  assert not os.path.exists(small_config.output.workdir)  # Nothing written: it never started.


def test_api_is_refused_beside_your_own_model():
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.UserError, match="Leave --api out"):
    config_lib.Config.from_flags(model="examples/residual_subclass.py:build", api="functional")


# ---------------------------------------------------------------- Trained end to end.
@pytest.mark.parametrize("name, api, num_replicas", [("two_branch", "functional", 1),
                                                     ("residual", "subclass", 2)])
@pytest.mark.slow
def test_users_models_learn_fashion_mnist_under_default_and_mirrored(own_model_runs, name, api,
                                                                     num_replicas):
  config, results = own_model_runs[name]
  assert results["test_accuracy"] > 0.5  # 40 steps; chance is 0.1.
  assert (results["model"], results["api"], results["num_replicas"]) == (
      config.model.name, api, num_replicas)
  classes = own_model.load_function(config.model.name).custom_objects()
  assert results["params"] == export.load_keras_model(config.output.workdir, classes).count_params()


@pytest.mark.slow
def test_users_model_exports_reload_to_the_same_accuracy(own_model_runs):
  # The subclassed model reloads in a new process below, as a user reloads it.
  config, results = own_model_runs["two_branch"]
  for export_format in ("keras", "saved_model"):
    figures = evaluate.evaluate_export(config.output.workdir, export_format)
    assert figures["test_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_evaluate_reloads_a_subclassed_users_model_in_a_new_process(own_model_runs):
  config, results = own_model_runs["residual"]
  process = subprocess.run(
      [sys.executable, "-m", "trainer.evaluate", f"--workdir={config.output.workdir}"],
      cwd=processes.ROOT, capture_output=True, text=True, timeout=120)
  assert process.returncode == 0, process.stderr[-2000:]
  recorded = results["test_accuracy"]
  assert f"test accuracy {recorded:.4f} (results.json: {recorded:.4f})" in process.stdout


@pytest.mark.slow
def test_a_users_model_resumes_for_more_epochs(own_model_runs, tmp_path):
  config, results = own_model_runs["two_branch"]
  workdir = shutil.copytree(config.output.workdir, tmp_path / "run")
  start = time.time()
  resumed = train.train_and_evaluate(config.replace(workdir=str(workdir), epochs=2))
  this_process = time.time() - start
  assert resumed["steps"] == 2 * results["steps"] and resumed["processes"] == 2
  # The first process's time up to its last checkpoint counts too (it took more than a second).
  assert resumed["wall_time_s"] > this_process + 1.0
  assert resumed["test_accuracy"] > results["test_accuracy"]


def test_a_subclassed_model_whose_module_is_gone_says_how_to_make_it_importable(
    small_config, tmp_path, monkeypatch):
  moved = tmp_path / "moved_net.py"
  shutil.copy(os.path.join(EXAMPLES, "residual_subclass.py"), moved)
  config = small_config.replace(model=f"{moved}:build", api=None, max_steps_per_epoch=5)
  train.train_and_evaluate(config)
  moved.unlink()
  monkeypatch.delitem(sys.modules, "moved_net")
  monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
  with pytest.raises(errors.UserError, match=r"classes come from .*moved_net.py \(.*there is no "
                                             r"file.*Run from the folder.*--format=saved_model"):
    evaluate.evaluate_export(config.output.workdir)


def test_a_users_float16_softmax_trains_in_float32_under_mixed_precision(small_config, tmp_path):
  # Under mixed_float16 a user's last Dense computes (and outputs) float16; the harness casts
  # the output to float32 before the loss, and scales the loss.
  spec = _write(tmp_path, """
      def build(input_shape, num_classes):
        return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                 keras.layers.Dense(num_classes, activation="softmax")])
      """, name="half_net") + ":build"
  results = train.train_and_evaluate(small_config.replace(
      model=spec, api=None, precision="mixed_float16", max_steps_per_epoch=10))
  assert results["precision"] == "mixed_float16" and results["from_logits"] is False
  assert 0 < results["test_loss"] < 10 and results["test_accuracy"] > 0.1
