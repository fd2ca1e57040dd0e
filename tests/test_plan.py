"""trainer.plan: the plan a run logs and follows is the one `python -m trainer.plan` prints for
the same machine; on a machine given by its facts (NVIDIA's V100 recipe), without a GPU, in
seconds; a plan that cannot run is refused in one line, exit 2, as the run would refuse it.

trainer.plan runs in processes of its own: it takes trainer.main's flags, and absl's one flag
registry refuses the other entry points' flags of the same names in the test process."""

import json

import pytest

from tests import processes
from trainer import config as config_lib
from trainer import errors
from trainer import train
from trainer.distribute import device_plan

RESNET50 = dict(model="resnet50", dataset="synthetic", image_shape=(224, 224, 3),
                num_classes=1000, optimizer="sgd", momentum=0.875)
RESNET50_FLAGS = ["--model=resnet50", "--dataset=synthetic", "--image_shape=224,224,3",
                  "--num_classes=1000", "--optimizer=sgd", "--momentum=0.875"]


def arguments(config: config_lib.Config) -> list:
  """The command line of `config`: each flag that differs from its default."""
  return processes.command_line({
      name: value for name, value in config.to_flags().items()
      if value != config_lib.default(name) and value is not None})


def on_gpus(count: int, gpu: str = "A100-40GB", **settings) -> device_plan.DevicePlan:
  return device_plan.plan_run(config_lib.Config.from_flags(**settings),
                              device_plan.assumed_facts(gpus_per_worker=count, gpu=gpu))


@pytest.mark.slow
def test_the_runs_logged_plan_is_the_one_trainer_plan_prints_for_this_machine(small_config,
                                                                                monkeypatch):
  # What absl's logging.info is given: in the whole suite an earlier test leaves absl's handler
  # quiet, so caplog would see nothing.
  messages = []
  monkeypatch.setattr(train.logging, "info",
                      lambda message, *args: messages.append(message % args if args else message))
  config = small_config.replace(strategy="mirrored", cpu_devices=2)
  train.train_and_evaluate(config)
  logged = next(message for message in messages if message.startswith(device_plan.LOG_HEADING))
  printed = processes.run_module("trainer.plan", *arguments(config), timeout=180)
  assert printed.returncode == 0, printed.stderr[-3000:]
  assert logged.splitlines()[1:] == printed.stdout.strip().splitlines()
  assert "strategy mirrored, 2 replicas of 32 examples" in logged


@pytest.mark.slow
def test_nvidias_resnet50_batches_fit_a_v100_and_float32_at_512_does_not():
  # NVIDIA DeepLearningExamples, ResNet-50 v1.5 on a DGX-1 (8 V100 16G): 256 a GPU in mixed
  # precision, 128 in float32.
  mixed = on_gpus(8, "V100-16GB", batch_size=2048, **RESNET50)
  assert (mixed.precision, mixed.strategy, mixed.num_replicas, mixed.per_replica_batch,
          mixed.collective, mixed.memory.fits) == ("mixed_float16", "mirrored", 8, 256, "NCCL",
                                                   True)
  assert on_gpus(8, "V100-16GB", batch_size=1024, precision="float32",
                 **RESNET50).memory.fits is True
  assert on_gpus(8, "V100-16GB", batch_size=4096, precision="float32",
                 **RESNET50).memory.fits is False


@pytest.mark.parametrize("settings, message", [
    (dict(batch_size=256, gpus=3), "--batch_size=256 cannot be split evenly across 3 replicas"),
    (dict(model="cnn", deterministic=True, jit_compile=True, gpus=1),
     "--deterministic --jit_compile: XLA has no deterministic gradient of MaxPooling2D"),
    (dict(model="resnet18", sync_batchnorm=True, jit_compile=True, image_shape=(32, 32, 3),
          gpus=2), "--sync_batchnorm --jit_compile over 2 GPU replicas"),
])
def test_settings_the_gpus_cannot_run_are_refused_in_one_line(settings, message):
  with pytest.raises(errors.UserError) as refusal:
    on_gpus(settings.pop("gpus"), dataset="synthetic", **settings)
  assert str(refusal.value).startswith(message) and "\n" not in str(refusal.value)


@pytest.mark.slow
def test_the_command_plans_a_cluster_writes_json_and_refuses_in_one_line(tmp_path):
  written = tmp_path / "plan.json"
  done = processes.run_module(
      "trainer.plan", *RESNET50_FLAGS, "--backend=jax", "--batch_size=4096", "--workers=2",
      "--gpus_per_worker=8", "--gpu=V100-16GB", f"--json={written}", timeout=180)
  assert done.returncode == 0, done.stderr[-3000:]
  saved = json.loads(written.read_text())
  assert {"backend", "strategy", "num_replicas", "per_replica_batch", "precision",
          "precision_reason", "collective", "environment", "pack_steps", "memory"} <= set(saved)
  assert (saved["backend"], saved["strategy"], saved["num_replicas"], saved["per_replica_batch"],
          saved["collective"]) == ("jax", "multi_worker_mirrored", 16, 256, "NCCL")
  assert saved["environment"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
  assert saved["memory"]["fits"] is True and set(saved["memory"]["parts"]) == {
      "weights", "optimizer_slots", "gradients", "activations", "workspace"}
  assert "multi_worker_mirrored, 16 replicas of 256 examples" in done.stdout
  refused = processes.run_module("trainer.plan", "--dataset=synthetic", "--batch_size=256",
                                 "--gpus_per_worker=3", "--gpu=A100-40GB", timeout=180)
  assert refused.returncode == 2
  assert refused.stderr.strip().splitlines()[-1].startswith(
      "error: --batch_size=256 cannot be split evenly across 3 replicas")
