"""The device plan from injected device facts: machines of 1, 2, 3 and 8 GPUs of compute
capability 6.1 to 9.0, one and two workers, GPUs shared or each worker's own, both backends, CPUs
with and without bfloat16; each decision and each refusal, in milliseconds. The memory estimate
is checked against NVIDIA's published ResNet-50 batch sizes (seconds: it builds resnet50)."""

import dataclasses

import pytest

from trainer import errors
from trainer.distribute import device_plan
from trainer.distribute import hardware
from trainer.distribute import memory_estimate
from trainer.distribute import precision as precision_lib
from trainer.loop import schedule

GiB = 2**30
# Footprints as memory_estimate.model_footprint reads them, without building a model.
MLP = memory_estimate.ModelFootprint(
    parameters=203_530, trainable_parameters=203_530, kept_per_example=1_050,
    largest_per_example=784, input_per_example=784,
    layer_kinds=frozenset({"InputLayer", "Flatten", "Dense", "Activation"}))
CNN = dataclasses.replace(MLP, layer_kinds=frozenset(
    {"InputLayer", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Activation"}))
RESNET_224 = dataclasses.replace(  # resnet50's counts at 224x224x3.
    CNN, parameters=25_610_152, trainable_parameters=25_557_032, kept_per_example=21_076_968,
    largest_per_example=802_816, input_per_example=150_528,
    layer_kinds=CNN.layer_kinds | {"BatchNormalization", "ReLU", "Add"})


def gpus(count, capability=(8, 0), memory_gib=40, **facts) -> device_plan.DeviceFacts:
  return device_plan.DeviceFacts(
      gpus=count, gpu_name="NVIDIA GPU", compute_capability=capability,
      gpu_memory_bytes=memory_gib * GiB, gpu_ids=tuple(str(i) for i in range(count)), **facts)


def cpu(bfloat16=None, **facts) -> device_plan.DeviceFacts:
  return device_plan.DeviceFacts(cpu_name="AMD EPYC", cpu_bfloat16=bfloat16,
                                 host_memory_bytes=16 * GiB, **facts)


def plan(facts, footprint=MLP, **request) -> device_plan.DevicePlan:
  return device_plan.make_device_plan(facts, device_plan.PlanRequest(**request), footprint)


# ---------------------------------------------------------------- Strategy, replicas, collective.
@pytest.mark.parametrize("backend, facts, request_, expected", [
    ("tensorflow", cpu(), {}, ("default", 1, "none")),
    ("tensorflow", cpu(), {"cpu_devices": 2}, ("mirrored", 2, "RING")),
    ("tensorflow", gpus(1), {}, ("one_device", 1, "none")),
    ("tensorflow", gpus(2), {}, ("mirrored", 2, "NCCL")),
    ("tensorflow", gpus(3), {"batch_size": 96}, ("mirrored", 3, "NCCL")),
    ("tensorflow", gpus(8), {"batch_size": 256}, ("mirrored", 8, "NCCL")),
    ("tensorflow", gpus(8), {"strategy": "default"}, ("default", 1, "none")),
    # Several workers with GPUs all-reduce over NCCL, not RING over gRPC.
    ("tensorflow", gpus(8, workers=2), {"strategy": "multi_worker_mirrored", "batch_size": 256},
     ("multi_worker_mirrored", 16, "NCCL")),
    ("tensorflow", gpus(1, workers=2), {"strategy": "multi_worker_mirrored"},
     ("multi_worker_mirrored", 2, "NCCL")),
    ("tensorflow", cpu(workers=2), {"strategy": "multi_worker_mirrored"},
     ("multi_worker_mirrored", 2, "RING")),
    ("tensorflow", cpu(workers=2), {"strategy": "multi_worker_mirrored", "cpu_devices": 2},
     ("multi_worker_mirrored", 4, "RING")),
    ("jax", cpu(), {}, ("default", 1, "none")),
    ("jax", cpu(), {"cpu_devices": 2}, ("mirrored", 2, "in-process")),
    ("jax", gpus(1), {}, ("default", 1, "none")),  # JAX's auto on one GPU, as jax_runtime.
    ("jax", gpus(8), {"batch_size": 256}, ("mirrored", 8, "NCCL")),
    ("jax", gpus(8), {"strategy": "one_device"}, ("one_device", 1, "none")),
    ("jax", cpu(workers=2), {"strategy": "multi_worker_mirrored"},
     ("multi_worker_mirrored", 2, "gloo")),
    ("jax", gpus(2, workers=2), {"strategy": "multi_worker_mirrored"},
     ("multi_worker_mirrored", 4, "NCCL")),
])
def test_strategy_replicas_and_collective(backend, facts, request_, expected):
  made = plan(facts, backend=backend, **request_)
  assert (made.strategy, made.num_replicas, made.collective) == expected
  assert made.per_replica_batch == device_plan.PlanRequest(**request_).batch_size // expected[1]


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_a_batch_the_replicas_cannot_split_is_refused_in_one_line(backend):
  with pytest.raises(errors.UserError, match=r"^--batch_size=256 cannot be split evenly across "
                                             r"3 replicas\. Use a multiple of 3, such as 255"):
    plan(gpus(3), backend=backend, batch_size=256)
  with pytest.raises(errors.UserError, match="--grad_accum_steps=4 does not divide"):
    plan(gpus(8, workers=2), backend=backend, strategy="multi_worker_mirrored", batch_size=32,
         grad_accum_steps=4)


# ---------------------------------------------------------------- Precision.
@pytest.mark.parametrize("capability, policy", [((6, 1), "float32"), ((7, 0), "mixed_float16"),
                                                ((7, 5), "mixed_float16"),
                                                ((8, 0), "mixed_bfloat16"),
                                                ((9, 0), "mixed_bfloat16")])
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_auto_precision_on_gpus_follows_the_compute_capability_on_both_backends(
    backend, capability, policy):
  made = plan(gpus(2, capability, cpu_bfloat16="AMX-BF16"), backend=backend, model="cnn")
  assert made.precision == policy
  assert f"{capability[0]}.{capability[1]}" in made.precision_reason


@pytest.mark.parametrize("model, batch_size, cpu_devices", [
    ("cnn", 32, 1), ("cnn", 32, 2), ("resnet50", 32, 1), ("mlp", 32, 1), ("mlp", 32, 2),
    ("mlp", 2048, 1), ("applications.MobileNetV2", 32, 1)])
@pytest.mark.parametrize("cpu_flags", [set(), {"avx512f", "avx512_bf16"}, {"amx_bf16"}])
@pytest.mark.parametrize("capabilities", [[], [(7, 0), (8, 0)]])
def test_auto_precision_is_what_the_tensorflow_runtime_resolves_today(
    monkeypatch, model, batch_size, cpu_devices, cpu_flags, capabilities):
  # runtime.open_runtime: resolve_precision(config.precision, config.model, xla on 1 replica).
  monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: capabilities)
  monkeypatch.setattr(hardware, "cpu_flags", lambda: cpu_flags)
  xla_on_one = model == "mlp" and batch_size < 1024
  today = precision_lib.resolve_precision("auto", model, xla=xla_on_one)
  facts = (gpus(2, min(capabilities)) if capabilities else cpu(hardware.cpu_bfloat16()))
  made = plan(facts, model=model, batch_size=batch_size, cpu_devices=cpu_devices)
  assert (made.precision, made.precision_reason) == today


def test_jax_keeps_float32_on_cpus_with_bfloat16_and_an_asked_precision_is_kept():
  assert plan(cpu("AMX-BF16"), backend="jax", model="cnn").precision == "float32"
  made = plan(gpus(1, (7, 0)), backend="jax", precision="mixed_bfloat16")
  assert (made.precision, made.precision_reason) == ("mixed_bfloat16",
                                                     "asked for with --precision")


# ---------------------------------------------------------------- Environment.
def test_memory_growth_is_set_for_the_framework_that_runs_the_gpus():
  assert plan(gpus(2)).environment == {"KERAS_BACKEND": "tensorflow",
                                       "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
  assert plan(gpus(2), backend="jax").environment == {
      "KERAS_BACKEND": "jax", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  assert plan(gpus(2), gpu_memory_growth=False).environment == {"KERAS_BACKEND": "tensorflow"}
  assert plan(gpus(2), backend="jax", gpu_memory_growth=False).environment == {
      "KERAS_BACKEND": "jax"}
  assert plan(cpu()).environment == {"KERAS_BACKEND": "tensorflow"}


def test_jax_deterministic_on_gpus_asks_xla_for_deterministic_ops():
  assert plan(gpus(2), backend="jax", deterministic=True).environment["XLA_FLAGS"] == (
      "--xla_gpu_deterministic_ops=true")
  assert "XLA_FLAGS" not in plan(gpus(2), backend="jax").environment
  assert "XLA_FLAGS" not in plan(cpu(), backend="jax", deterministic=True).environment
  assert "XLA_FLAGS" not in plan(gpus(2), deterministic=True).environment  # TF's own switch.


def test_jax_cpu_devices_are_xlas_host_device_count():
  assert plan(cpu(), backend="jax", cpu_devices=4).environment["XLA_FLAGS"] == (
      "--xla_force_host_platform_device_count=4")
  assert "XLA_FLAGS" not in plan(cpu(), cpu_devices=4).environment  # TF splits its own CPU.


# ---------------------------------------------------------------- Workers sharing a host's GPUs.
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_workers_sharing_a_hosts_gpus_each_take_their_own(backend):
  facts = gpus(8, workers=2, workers_per_host=2, host_worker_index=1, gpus_shared=True)
  made = plan(facts, backend=backend, strategy="multi_worker_mirrored", batch_size=64)
  assert made.environment["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"
  assert (made.num_replicas, made.collective, made.notes) == (8, "NCCL", ())


def test_the_gpus_cuda_visible_devices_allowed_are_the_ones_divided():
  facts = dataclasses.replace(
      gpus(3, workers=2, workers_per_host=2, host_worker_index=1, gpus_shared=True),
      gpu_ids=("GPU-aa", "GPU-bb", "GPU-cc"))
  made = plan(facts, backend="jax", strategy="multi_worker_mirrored")
  assert made.environment["CUDA_VISIBLE_DEVICES"] == "GPU-bb"
  assert made.num_replicas == 2 and made.notes == (
      "1 GPU of the host's 3 left idle: 2 workers take 1 each.",)


def test_jax_workers_that_would_share_a_gpu_are_refused_in_one_line():
  facts = gpus(1, workers=2, workers_per_host=2, gpus_shared=True)
  with pytest.raises(errors.UserError, match=r"^2 JAX workers on one host share its 1 GPU, and "
                                             r"NCCL refuses a GPU in two processes: run at most 1"):
    plan(facts, backend="jax", strategy="multi_worker_mirrored")


def test_tensorflow_workers_sharing_a_gpu_all_reduce_over_ring():
  facts = gpus(1, workers=2, workers_per_host=2, gpus_shared=True)
  made = plan(facts, strategy="multi_worker_mirrored")
  assert (made.num_replicas, made.collective) == (2, "RING")
  assert "CUDA_VISIBLE_DEVICES" not in made.environment


def test_workers_with_gpus_of_their_own_keep_them():
  facts = gpus(4, workers=2, workers_per_host=2, host_worker_index=1, gpus_shared=False)
  made = plan(facts, backend="jax", strategy="multi_worker_mirrored")
  assert "CUDA_VISIBLE_DEVICES" not in made.environment
  assert (made.num_replicas, made.collective) == (8, "NCCL")


# ---------------------------------------------------------------- Packs.
def test_jax_packs_steps_except_convnets_on_cpus():
  assert plan(cpu(), backend="jax").pack_steps == schedule.MAX_PACK
  assert plan(cpu(), CNN, backend="jax").pack_steps == 1
  assert plan(gpus(1), CNN, backend="jax").pack_steps == schedule.MAX_PACK
  assert plan(cpu(), backend="jax", batch_size=1024).pack_steps == 5  # schedule.CPU_PACK_BYTES


def test_a_pack_is_bounded_by_the_host_bytes_it_stacks():
  # 224x224x3 float32 at batch 256 is 154 MB a step: 25 of them were 3.9 GB on the host.
  assert plan(gpus(8), RESNET_224, backend="jax", batch_size=256).pack_steps == 3
  assert plan(gpus(8), RESNET_224, backend="jax", batch_size=2048).pack_steps == 1
  # Each worker stacks only its part of the global batch.
  assert plan(gpus(8, workers=2), RESNET_224, backend="jax", batch_size=512,
              strategy="multi_worker_mirrored").pack_steps == 3


def test_tensorflow_packs_only_one_replica_under_xla():
  assert plan(cpu()).pack_steps == schedule.MAX_PACK  # The mlp under auto's XLA.
  assert plan(cpu(), jit_compile=False).pack_steps == 1
  assert plan(cpu(), cpu_devices=2, jit_compile=True).pack_steps == 1
  assert plan(cpu(workers=2), strategy="multi_worker_mirrored", jit_compile=True).pack_steps == 1


# ---------------------------------------------------------------- Export.
def test_exports_serve_on_cpus_and_gpus_whatever_trained_them():
  # JAX lowers for the platforms named, on any machine, so a CPU run checks the GPU run's path.
  for backend in ("tensorflow", "jax"):
    assert plan(gpus(2), backend=backend).export_platforms == ("cpu", "cuda")
    assert plan(cpu(), backend=backend).export_platforms == ("cpu", "cuda")


# ---------------------------------------------------------------- XLA paths refused on GPUs.
def test_deterministic_xla_with_maxpool_on_gpus_is_refused_in_one_line():
  with pytest.raises(errors.UserError, match=r"^--deterministic --jit_compile: XLA has no "
                                             r"deterministic gradient of MaxPooling2D"):
    plan(gpus(1), CNN, model="cnn", deterministic=True, jit_compile=True)
  plan(gpus(1), MLP, deterministic=True, jit_compile=True)  # No MaxPool.
  plan(gpus(1), CNN, model="cnn", deterministic=True)  # No XLA.
  plan(cpu(), CNN, model="cnn", deterministic=True, jit_compile=True)  # CPUs.


def test_sync_batchnorm_under_xla_over_several_gpus_is_refused_in_one_line():
  with pytest.raises(errors.UserError, match=r"^--sync_batchnorm --jit_compile over 2 GPU "
                                             r"replicas"):
    plan(gpus(2), RESNET_224, model="resnet50", sync_batchnorm=True, jit_compile=True)
  plan(gpus(1), RESNET_224, model="resnet50", sync_batchnorm=True, jit_compile=True)
  plan(gpus(2), RESNET_224, model="resnet50", sync_batchnorm=True)
  plan(cpu(), RESNET_224, model="resnet50", sync_batchnorm=True, jit_compile=True,
       cpu_devices=2)


# ---------------------------------------------------------------- GPUs a backend cannot use.
@pytest.mark.parametrize("backend, flag, advice", [("jax", "jax_cuda", ".[jax-cuda]"),
                                                   ("tensorflow", "tensorflow_cuda", "and-cuda")])
def test_gpus_the_backend_cannot_use_leave_a_cpu_plan_that_says_so(backend, flag, advice):
  made = plan(dataclasses.replace(gpus(4), **{flag: False}), backend=backend)
  assert (made.platform, made.num_replicas, made.collective) == ("cpu", 1, "none")
  assert "4 GPUs here" in made.notes[0] and advice in made.notes[0]


# ---------------------------------------------------------------- Memory.
def test_memory_is_estimated_at_the_per_replica_batch_against_the_device():
  made = plan(gpus(8, memory_gib=16), RESNET_224, model="resnet50", batch_size=8 * 128,
              precision="float32")
  alone = memory_estimate.estimate(RESNET_224, 128, "float32", device_bytes=16 * GiB)
  assert made.memory == alone and made.memory.fits and not made.notes
  too_big = plan(gpus(8, memory_gib=16), RESNET_224, model="resnet50", batch_size=8 * 512,
                 precision="float32")
  assert too_big.memory.fits is False and "lower --batch_size" in too_big.notes[0]
  assert plan(cpu(), cpu_devices=2).memory.device_bytes == 8 * GiB  # A half of the host's.


def test_the_estimate_prices_optimizer_slots_precision_and_accumulation():
  def parts(**settings):
    return memory_estimate.estimate(RESNET_224, 64, **settings).as_dict()["parts"]
  trainable = RESNET_224.trainable_parameters
  assert parts(precision="float32")["optimizer_slots"] == 2 * 4 * trainable  # Adam: m and v.
  assert parts(precision="float32", optimizer="sgd")["optimizer_slots"] == 4 * trainable
  assert parts(precision="float32", optimizer="sgd", momentum=0)["optimizer_slots"] == 0
  assert parts(precision="mixed_float16")["activations"] * 2 == parts(
      precision="float32")["activations"]
  assert parts(precision="float32", grad_accum_steps=4)["activations"] * 4 == parts(
      precision="float32")["activations"]
  assert parts(precision="float32", grad_accum_steps=4)["gradients"] == 2 * 4 * trainable
  assert parts(precision="float32", moving_average=True)["weights"] == parts(
      precision="float32")["weights"] + 4 * trainable
  assert parts(precision="mixed_bfloat16")["weights"] == parts(
      precision="float32")["weights"] + 2 * trainable  # The layers' 16-bit copies.
  # A GPU holds the CUDA context and the libraries' workspaces beside the tensors.
  assert parts(precision="float32")["workspace"] - parts(
      precision="float32", on_gpu=False)["workspace"] == memory_estimate.GPU_RESERVE_BYTES


def test_the_backward_pass_keeps_convolutions_and_relus_outputs_not_batchnorms():
  import keras  # pylint: disable=g-import-not-at-top
  images = keras.Input((8, 8, 3))
  conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(images)
  normalized = keras.layers.BatchNormalization()(conv)
  activated = keras.layers.ReLU()(normalized)
  pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([activated, conv]))
  footprint = memory_estimate.model_footprint(keras.Model(images, pooled))
  # Kept: the images (the convolution's input), the convolution's output (BatchNorm's input)
  # and the ReLU's output; neither BatchNorm's output nor the sum nor the pooled features.
  assert footprint.kept_per_example == 8 * 8 * 3 + 8 * 8 * 4 + 8 * 8 * 4
  assert (footprint.largest_per_example, footprint.input_per_example) == (8 * 8 * 4, 8 * 8 * 3)
  assert footprint.trainable_parameters == 3 * 3 * 3 * 4 + 2 * 4
  assert footprint.parameters == footprint.trainable_parameters + 2 * 4  # Moving statistics.


def test_a_layer_the_rule_does_not_know_keeps_its_inputs_and_outputs():
  import keras  # pylint: disable=g-import-not-at-top

  class Doubling(keras.layers.Layer):
    def call(self, inputs):
      return inputs * 2

  images = keras.Input((10,))
  footprint = memory_estimate.model_footprint(keras.Model(images, Doubling()(images)))
  assert footprint.kept_per_example == 20


@pytest.fixture(scope="module")
def resnet50_224() -> memory_estimate.ModelFootprint:
  return memory_estimate.built_in_footprint("resnet50", (224, 224, 3), 1000)


def test_resnet50_footprint_is_counted_from_its_layers(resnet50_224):
  assert resnet50_224 == dataclasses.replace(RESNET_224, layer_kinds=resnet50_224.layer_kinds)
  assert {"Conv2D", "MaxPooling2D", "BatchNormalization"} <= resnet50_224.layer_kinds


def test_nvidias_resnet50_batch_sizes_on_a_16gb_v100_fit_and_float32_at_512_does_not(
    resnet50_224):
  # NVIDIA DeepLearningExamples, TensorFlow ResNet-50 v1.5 on DGX-1 (V100 16G): batch 256 a GPU
  # in mixed precision, 128 in float32; SGD with momentum 0.875.
  v100s = device_plan.assumed_facts(gpus_per_worker=8, gpu="V100-16GB")
  recipe = dict(model="resnet50", optimizer="sgd", momentum=0.875)
  mixed = plan(v100s, resnet50_224, batch_size=8 * 256, **recipe)
  assert (mixed.precision, mixed.per_replica_batch, mixed.memory.fits) == (
      "mixed_float16", 256, True)
  float32 = plan(v100s, resnet50_224, batch_size=8 * 128, precision="float32", **recipe)
  assert (float32.per_replica_batch, float32.memory.fits) == (128, True)
  assert plan(v100s, resnet50_224, batch_size=8 * 512, precision="float32",
              **recipe).memory.fits is False
  # Activations dominate: a weights-only estimate would fit any of these.
  parts = float32.memory.as_dict()["parts"]
  assert parts["activations"] > 10 * (parts["weights"] + parts["optimizer_slots"])


# ---------------------------------------------------------------- Facts.
FOUR_GPUS = """\
00000000:07:00.0, GPU-aaaa, NVIDIA A100-SXM4-40GB, 40960, Disabled
00000000:0F:00.0, GPU-bbbb, NVIDIA A100-SXM4-40GB, 40960, Disabled
00000000:47:00.0, GPU-cccc, NVIDIA A100-SXM4-80GB, 81920, Disabled
00000000:4E:00.0, GPU-dddd, NVIDIA A100-SXM4-40GB, 40960, Enabled
"""
CAPABILITIES = """\
00000000:07:00.0, 8.0
00000000:0F:00.0, 8.0
00000000:47:00.0, 8.0
00000000:4E:00.0, [N/A]
"""


def listed(cuda_visible_devices):
  return device_plan.visible_gpus(hardware.parse_nvidia_smi(FOUR_GPUS),
                                  device_plan.parse_compute_capabilities(CAPABILITIES),
                                  cuda_visible_devices)


def test_visible_gpus_follow_cuda_visible_devices_by_index_or_uuid():
  assert [gpu["id"] for gpu in listed(None)] == ["0", "1", "2", "3"]
  assert [(gpu["id"], gpu["memory_mib"]) for gpu in listed("2,GPU-bb")] == [
      ("2", 81920), ("GPU-bb", 40960)]
  assert listed("") == [] and listed("-1") == []
  assert [gpu["id"] for gpu in listed("0,7,1")] == ["0"]  # CUDA stops at an unknown entry.
  mig = listed("3")[0]
  assert (mig["memory_mib"], mig["compute_capability"]) == (None, None)
  assert listed("0")[0] == {"id": "0", "name": "NVIDIA A100-SXM4-40GB",
                            "compute_capability": (8, 0), "memory_mib": 40960}


def test_a_driver_without_the_compute_capability_field_leaves_it_unknown():
  refused = 'Field "compute_cap" is not a valid field to query.\n'
  assert device_plan.parse_compute_capabilities(refused) == {}


@pytest.mark.parametrize("addresses, index, expected", [
    ((), 0, (1, 0)),
    (("a:1", "b:1"), 1, (1, 0)),
    (("127.0.0.1:2222", "localhost:2223", "b:1"), 1, (2, 1)),
    (("a:1", "b:1", "a:2", "a:3"), 3, (3, 2)),
])
def test_host_position_counts_the_workers_of_one_host(addresses, index, expected):
  assert device_plan.host_position(addresses, index) == expected


def test_host_memory_from_meminfo():
  assert device_plan.parse_meminfo("MemTotal:       16384 kB\nMemFree: 1 kB\n") == 16 * 2**20
  assert device_plan.parse_meminfo("") is None


def test_assumed_facts_take_a_named_gpu_or_its_capability_and_memory():
  named = device_plan.assumed_facts(gpus_per_worker=8, workers=2, gpu="H100-80GB")
  assert (named.compute_capability, named.gpu_memory_bytes, named.workers) == (
      (9, 0), 80 * GiB, 2)
  given = device_plan.assumed_facts(gpus_per_worker=2, compute_capability=(7, 5),
                                    gpu_memory_gb=16)
  assert (given.gpus, given.compute_capability, given.gpu_memory_bytes) == (2, (7, 5), 16 * GiB)
  with pytest.raises(errors.UserError, match=r"^--gpus_per_worker=2 needs the GPU: --gpu=NAME"):
    device_plan.assumed_facts(gpus_per_worker=2)


def test_this_machines_facts_are_read():
  facts = device_plan.read_facts()
  assert facts.gpus == len(hardware.gpus()) and facts.host_memory_bytes > 2**30
  assert facts.cpu_bfloat16 == hardware.cpu_bfloat16() and facts.workers == 1
