"""Settings: one flag per Config field and back, and what RunSettings resolves them to."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

from tests.processes import ROOT
from trainer import config as config_lib
from trainer import errors
from trainer.records import workdir as workdir_lib

# Run in a process of its own: other entry points define some of the same flag names in absl's
# one global registry, which a test process importing them all would refuse.
DUMP_FLAGS = """
import json, sys
from trainer import main
flags = main.FLAGS.get_flags_for_module(sys.modules["trainer.main"])
main.FLAGS(["trainer.main", "--api=subclass", "--worker_hosts=a:1,b:2", "--jit_compile"])
print(json.dumps({"flags": {f.name: {"default": f.default, "help": f.help} for f in flags},
                  "config": main.config_from_flags().to_flags()}))
"""


@pytest.fixture(scope="module")
def main_flags():
  result = subprocess.run([sys.executable, "-c", DUMP_FLAGS], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_setting_has_exactly_one_flag_and_every_flag_one_setting(main_flags):
  assert sorted(main_flags["flags"]) == sorted(config_lib.SETTINGS)


def test_the_table_maps_every_flag_to_one_field_and_every_field_to_one_flag():
  mapped = sorted(config_lib.FLAG_FIELDS.values())
  fields = sorted((section, field.name) for section, fields in config_lib.SECTIONS.items()
                  for field in dataclasses.fields(fields))
  assert mapped == fields
  assert [field.name for field in dataclasses.fields(config_lib.Config)] == list(
      config_lib.SECTIONS)
  # Each field keeps its flag's name, but where its section would repeat it.
  assert {flag: field for flag, (_, field) in config_lib.FLAG_FIELDS.items()
          if field != flag} == {"model": "name"}


# config.json of a run written by the code before the Config had sections (d1de5fb), with a
# value other than the default for nearly every setting.
OLD_CONFIG_JSON = os.path.join(os.path.dirname(__file__), "fixtures", "config_d1de5fb.json")


def test_a_workdir_written_before_the_sections_resumes_with_the_same_config_json(tmp_path):
  with open(OLD_CONFIG_JSON) as f:
    saved = json.load(f)
  # What a rerun of the run's command gives: its flags, by name.
  config = config_lib.Config.from_flags(
      **{name: value for name, value in saved.items() if name in config_lib.SETTINGS})
  assert (config.model.name, config.model.api, config.data.batch_size, config.data.seed,
          config.optim.learning_rate, config.loop.max_steps_per_epoch, config.loop.eval_steps,
          config.runtime.cpu_devices, config.output.log_every,
          config.output.checkpoint_every) == ("resnet18", "subclass", 96, 7, 0.2, 50, 4, 2, 10, 20)
  assert config.peak_learning_rate == pytest.approx(0.2 * 96 / 256)
  settings = config_lib.RunSettings(
      config=config, strategy=saved["strategy"], num_replicas=saved["num_replicas"],
      precision=saved["precision"], precision_reason="asked for", device="CPU", is_chief=True)
  # config.json, unchanged but for the settings added since, at their defaults.
  written = json.loads(json.dumps(settings.run_config()))
  assert {name: written[name] for name in saved} == saved
  assert {name: written[name] for name in set(written) - set(saved)} == {
      "export_saved_model": True}
  workdir = tmp_path / "run"
  os.makedirs(workdir / "checkpoints")
  with open(workdir / "config.json", "w") as f:
    json.dump(saved, f)
  workdir_lib.check_can_start(str(workdir), settings.run_config(), overwrite=False)
  assert workdir_lib.record_changes(str(workdir), settings.run_config(), step=100) == []


def test_flags_take_their_default_and_help_from_the_config(main_flags):
  for name, flag in main_flags["flags"].items():
    assert flag["help"].endswith(config_lib.help_text(name)), name  # Enums lead with choices.
    default = config_lib.default(name)
    assert flag["default"] == (list(default) if isinstance(default, tuple) else default), name


def test_parsed_flags_become_the_config(main_flags):
  config = main_flags["config"]
  assert (config["api"], config["worker_hosts"], config["jit_compile"]) == (
      "subclass", ["a:1", "b:2"], True)
  assert config["workdir"] == "runs/mnist-subclass-auto"  # Named after what runs.


def test_run_settings_resolve_the_automatic_choices():
  def settings(num_replicas, **changes):
    return config_lib.RunSettings(
        config=config_lib.Config.from_flags(
            **changes), strategy="mirrored", num_replicas=num_replicas,
        precision="float32", precision_reason="asked for", device="CPU", is_chief=True)

  assert settings(1).steps_per_loop == config_lib.AUTO_STEPS_PER_LOOP
  assert settings(1, steps_per_loop=7).steps_per_loop == 7
  assert settings(1).jit_compile and not settings(2).jit_compile
  assert settings(2, jit_compile=True).jit_compile
  assert settings(1, batch_size=512).jit_compile and not settings(1, batch_size=1024).jit_compile
  assert not settings(1, model="cnn").jit_compile
  saved = settings(2, precision="auto", strategy="auto").run_config()
  assert (saved["strategy"], saved["precision"], saved["num_replicas"]) == (
      "mirrored", "float32", 2)


PRESETS_TO_CONFIGS = """
import glob, json, os
from trainer import main
configs = {}
for path in sorted(glob.glob("configs/*.cfg")):
  main.FLAGS.unparse_flags()
  main.FLAGS(["trainer.main", f"--flagfile={path}"])
  configs[os.path.basename(path)] = main.config_from_flags().to_flags()
print(json.dumps(configs))
"""


def test_every_preset_parses_into_a_config_and_resnet50_is_the_imagenet_recipe():
  result = subprocess.run([sys.executable, "-c", PRESETS_TO_CONFIGS], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr[-2000:]
  configs = json.loads(result.stdout.strip().splitlines()[-1])
  assert {"resnet18_small.cfg", "resnet50_imagenet.cfg", "seed.cfg"} <= set(configs)
  recipe = configs["resnet50_imagenet.cfg"]
  assert {name: recipe[name] for name in (
      "model", "batch_size", "optimizer", "momentum", "learning_rate", "lr_scaling",
      "warmup_epochs", "lr_schedule", "label_smoothing", "weight_decay", "epochs",
      "keep_best")} == {
          "model": "resnet50", "batch_size": 1024, "optimizer": "sgd", "momentum": 0.9,
          "learning_rate": 0.1, "lr_scaling": "linear", "warmup_epochs": 5,
          "lr_schedule": "cosine", "label_smoothing": 0.1, "weight_decay": 1e-4, "epochs": 90,
          "keep_best": "accuracy"}


@pytest.fixture(scope="module")
def help_output():
  result = subprocess.run([sys.executable, "-m", "trainer.main", "--helpshort"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  return result.stdout


def test_help_groups_the_trainers_flags_by_job_and_states_each_default_once(help_output):
  titles = re.findall(r"^(\w[\w :,]*):\n  --", help_output, re.MULTILINE)
  assert titles == ["Model", "Data", "Recipe: optimisation and evaluation",
                    "Distribution and precision", "Output"]
  stated = dict(re.findall(r"^  --(\w+)\S* \(default: (.*)\)$", help_output, re.MULTILINE))
  assert sorted(stated) == sorted(config_lib.SETTINGS)  # Only the trainer's, each once.
  for name, default in stated.items():
    assert default == config_lib.shown_default(name), name
    assert "(default" not in config_lib.help_text(name), name  # Not a second time.
  assert stated["epochs"] == "10" and stated["learning_rate"] == "0.001"
  assert stated["normalize"] == "false" and stated["jit_compile"] == "unset"


def test_what_an_unset_default_is_said_to_mean_is_what_the_code_does():
  from trainer.data import input_pipeline  # pylint: disable=g-import-not-at-top
  shown = config_lib.shown_default
  assert shown("api") == config_lib.Config.from_flags().model.api
  assert config_lib.Config.from_flags().run_name.startswith(shown("dataset"))
  assert shown("image_shape") == ",".join(map(str, input_pipeline.IMAGE_SHAPE))
  assert shown("num_classes") == str(input_pipeline.NUM_CLASSES)
  assert f"synthetic: {input_pipeline.SYNTHETIC_TEST_BATCHES} global batches" in shown(
      "num_test_examples")
  assert shown("workdir") == "runs/<dataset>[-<model>]-<api>-<strategy>"
  assert config_lib.Config.from_flags().output.workdir == "runs/mnist-functional-auto"
  assert config_lib.Config.from_flags(
      dataset="cifar10", model="cnn", api="subclass",
      strategy="mirrored").output.workdir == "runs/cifar10-cnn-subclass-mirrored"
  settings = config_lib.RunSettings(config=config_lib.Config.from_flags(), strategy="default",
                                    num_replicas=1, precision="float32", precision_reason="",
                                    device="CPU", is_chief=True)
  assert shown("steps_per_loop") == "auto" and settings.calls_sized_by_time


@pytest.mark.parametrize("flags, message", [
    (dict(dataset="synthetic", augment="flip"), "--augment and --normalize apply to real images"),
    (dict(dataset="synthetic", normalize=True), "--augment and --normalize apply to real images"),
    (dict(dataset="fashion_mnist", validation_split=0.1),
     "--validation_split applies to a folder of images, not to --dataset=fashion_mnist"),
])
def test_settings_the_flags_alone_rule_out_are_refused_before_any_data_is_read(flags, message):
  with pytest.raises(errors.UserError, match=re.escape(message)):
    config_lib.Config.from_flags(**flags)
