"""Shared test fixtures: two logical CPU devices, the real Fashion-MNIST files, a small config,
and one finished run per API for the tests that only read a run's outputs."""

import atexit
import os
import shutil
import tempfile

# `import jax` (Keras imports it wherever JAX is installed) sets TF_CPP_MIN_LOG_LEVEL=1 when it
# is unset, and every process a test starts would inherit it: TensorFlow's WARNING lines then
# reach the console of runs that a user, with it unset, sees filtered at 2. Fix it as users have.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Memory growth before TensorFlow starts its devices: on a GPU machine the session's own ops and
# each run started in it then share the GPUs with the runs in subprocesses. No test module may
# start them at import (tests/test_suite_imports.py).
os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"

import numpy as np
import pytest
import tensorflow as tf

from tests import datasets
from trainer import config as config_lib
from trainer.data import idx_files
from trainer.records import mfu

FASHION_MNIST_DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")

# Split the CPU before any test runs an op: TensorFlow fixes its devices on first use, and the
# multi-replica tests need two of them. Single-device code simply uses the first.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

# A run's MFU on a CPU is measured against the machine's matmul ceiling, which its first run
# measures (seconds) and keeps in the user's cache folder. The suite's runs, in this process and
# in the processes it starts, read one written here instead, in a cache folder of the session's
# own: no test measures it or touches the user's. The figure is above what any CPU reaches, so
# an MFU against it stays within (0, 1]; the FLOP counts themselves are tested exactly.
TEST_CPU_CEILING = 1e13
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="trainer-tests-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)
for _precision in mfu.COMPUTE_DTYPES:
  mfu.cpu_peak(_precision, measure=lambda dtype: {"flops_per_sec": TEST_CPU_CEILING,
                                                  "best": "the test suite's figure"})


def pytest_sessionstart(session):
  """Under pytest-xdist this process only hands files to its workers and never collects, so the
  start-up lines TensorFlow's C++ code wrote while this module imported it stayed in pytest's
  capture and were printed after the summary; collection drops them in a process that runs
  tests, and this drops them here."""
  if session.config.pluginmanager.has_plugin("dsession"):
    session.config.pluginmanager.getplugin("capturemanager").read_global_capture()


def pytest_collection_modifyitems(config, items):
  """Tests marked `gpu` check what only a real GPU can show: skipped on machines without one."""
  del config  # Unused.
  if tf.config.list_physical_devices("GPU"):
    return
  skip = pytest.mark.skip(reason="needs a GPU: run `python -m pytest -m gpu` on a GPU machine")
  for item in items:
    if "gpu" in item.keywords:
      item.add_marker(skip)


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> str:
  """The folder of Debian's Fashion-MNIST IDX files; CI must have it, elsewhere a skip."""
  if not os.path.isfile(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")):
    message = (f"Fashion-MNIST is not in {FASHION_MNIST_DIR}: "
               "apt-get install dataset-fashion-mnist")
    if os.environ.get("CI"):
      pytest.fail(message)
    pytest.skip(message)
  return FASHION_MNIST_DIR


@pytest.fixture
def small_config(tmp_path) -> config_lib.Config:
  """A seconds-long synthetic run in tmp_path; tests replace what they exercise. It exports
  model.keras only: the SavedModel's tracing was a quarter of such a run, and the tests of the
  SavedModel export turn it back on."""
  return config_lib.Config.from_flags(
      dataset="synthetic", epochs=1, batch_size=64, max_steps_per_epoch=20, strategy="default",
      workdir=str(tmp_path / "run"), log_every=10, export_saved_model=False)


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory) -> dict:
  """api -> (config, results) of one finished run each: 2 epochs of 100 synthetic steps,
  evaluated on 2 test batches during training and on all 1,000 test examples at the end.

  Shared by every test that only reads what a run wrote; such tests must not change the
  workdir.
  """
  from trainer import train  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("finished")
  runs = {}
  for api in config_lib.APIS:
    config = config_lib.Config.from_flags(api=api, dataset="synthetic", epochs=2, batch_size=64,
                               max_steps_per_epoch=100, strategy="default", log_every=10,
                               eval_steps=2, num_test_examples=1000, workdir=str(root / api))
    runs[api] = (config, train.train_and_evaluate(config))
  return runs


@pytest.fixture(scope="session")
def own_model_runs(fashion_subset, tmp_path_factory) -> dict:
  """name -> (config, results) of the example user models trained for 40 steps on fashion_subset
  and evaluated on its 1,000 test examples: "two_branch" (Functional) under the default
  strategy, "residual" (subclassed) mirrored over two logical CPU devices. Read-only, like
  finished_runs."""
  from trainer import train  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("own_models")
  runs = {}
  for name, model, strategy in (
      ("two_branch", "examples/two_branch_functional.py:build", dict(strategy="default")),
      ("residual", "examples/residual_subclass.py:build",
       dict(strategy="mirrored", cpu_devices=2))):
    config = config_lib.Config.from_flags(
        model=model, dataset="fashion_mnist", data_dir=str(fashion_subset / "idx"),
                               epochs=1, batch_size=64, max_steps_per_epoch=40, log_every=20,
                               workdir=str(root / name), **strategy)
    runs[name] = (config, train.train_and_evaluate(config))
  return runs


@pytest.fixture(scope="session")
def fashion_subset(fashion_mnist_dir, tmp_path_factory):
  """4,000 training and 1,000 test images of Fashion-MNIST as IDX files under idx/, class by
  class (the order an image folder lists them in: tests/test_image_folder.py writes a part of
  them as both)."""
  root = tmp_path_factory.mktemp("fashion_subset")
  train_images, train_labels, test_images, test_labels = idx_files.read_mnist_format(
      fashion_mnist_dir)
  os.makedirs(root / "idx")
  for images, labels, count, stem in ((train_images, train_labels, 4000, "train"),
                                      (test_images, test_labels, 1000, "t10k")):
    order = np.argsort(labels[:count], kind="stable")  # Class by class, as a folder lists them.
    images, labels = images[:count][order], labels[:count][order]
    datasets.write_idx(root / "idx" / f"{stem}-images-idx3-ubyte.gz", images[..., 0],
                       idx_files.IMAGE_MAGIC)
    datasets.write_idx(root / "idx" / f"{stem}-labels-idx1-ubyte.gz", labels.astype(np.uint8),
                       idx_files.LABEL_MAGIC)
  return root


@pytest.fixture(scope="session")
def tiny_tfds(tmp_path_factory) -> str:
  """A tfds data_dir holding "tiny_shapes": 12x10 colour images in 3 classes, prepared."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  rng = np.random.default_rng(0)

  def split(count):
    return tf.data.Dataset.from_tensor_slices({
        "image": rng.integers(0, 256, (count, 12, 10, 3), dtype=np.uint8),
        "label": rng.integers(0, 3, count)})
  tfds.dataset_builders.store_as_tfds_dataset(
      name="tiny_shapes", version="1.0.0", data_dir=data_dir,
      features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(12, 10, 3)),
                                           "label": tfds.features.ClassLabel(num_classes=3)}),
      split_datasets={"train": split(300), "test": split(50)})
  return data_dir


@pytest.fixture(scope="session")
def fashion_shards(fashion_subset, tmp_path_factory) -> str:
  """fashion_subset's IDX files (4,000 training, 1,000 test images) as 4 + 1 TFRecord shards."""
  from trainer.data import tfrecords  # pylint: disable=g-import-not-at-top
  output = tmp_path_factory.mktemp("shards") / "fashion"
  tfrecords.convert(str(fashion_subset / "idx"), str(output), num_shards=4)
  return str(output)


@pytest.fixture(scope="session")
def spiking_cluster(fashion_shards, tmp_path_factory) -> dict:
  """One run of two real workers, read by the tests of what it shows (loss scaling, file
  sharding): tests/spiking_model.py in mixed_float16, whose gradient overflows on replica 1, the
  second worker, only; on fashion_shards streamed, so each worker reads only its own files; one
  shared workdir, 30 steps. Under strace where it may trace, so each worker's opened files are
  known. {"workdir", "outputs", "returncodes", "traces": one per worker, or None and "untraced"
  saying why}. Read-only."""
  from tests import processes  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("spiking_cluster")
  workdir, traces = root / "run", [root / f"worker{index}.trace" for index in range(2)]
  flags = ["--strategy=multi_worker_mirrored",
           f"--model={os.path.join(processes.ROOT, 'tests', 'spiking_model.py')}:build",
           "--precision=mixed_float16", f"--data_dir={fashion_shards}", "--memory_limit_mb=1",
           "--epochs=1", "--batch_size=64", "--max_steps_per_epoch=30", "--eval_steps=2",
           "--log_every=10", "--worker_timeout=60", f"--workdir={workdir}"]
  untraced = None if shutil.which("strace") else "strace is not installed (apt-get install strace)"
  while True:
    hosts = processes.local_hosts(2)
    workers = [processes.start_worker(hosts, index, *flags, wrapper=() if untraced else (
        "strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=openat", "-o", str(traces[index])))
               for index in range(2)]
    try:
      outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    finally:
      for worker in workers:
        processes.kill(worker)
    if untraced or not any("PTRACE" in output or "Operation not permitted" in output
                           for output in outputs):
      break
    untraced = "strace may not trace here: " + outputs[0][-300:]
    shutil.rmtree(workdir, ignore_errors=True)
  return {"workdir": workdir, "outputs": outputs,
          "returncodes": [worker.returncode for worker in workers],
          "traces": None if untraced else traces, "untraced": untraced}


@pytest.fixture
def restores_op_determinism():
  """For a test that trains with --deterministic in this process: the run turns TensorFlow's
  op determinism on for the rest of the process, and this turns it back off after the test, so
  the tests after it run as a user's run without the flag does (not serialised, and free to
  use unseeded random ops)."""
  from tensorflow.python.framework import config as framework_config
  was_on = framework_config.is_op_determinism_enabled()
  yield
  if not was_on:
    framework_config.disable_op_determinism()


# One process answers every question for a TensorFlow that no test has started: importing it
# costs seconds. Each answer is caught apart, so that one failing fails only its own test.
_FRESH_PROCESS_PROBE = """
import json, os, sys
import pytest
import tensorflow as tf
from tensorflow.python.eager import context
from trainer.distribute import hardware
answers = {}
hardware.split_cpu(2)  # Fixes the threads before TensorFlow starts, as a run does.
answers["split_cpu_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
# Collecting the suite, as pytest does before any test runs; then whether a framework started.
try:
  code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests"])
  bridge = sys.modules.get("jax._src.xla_bridge")
  answers["collection"] = {
      "collected": int(code), "tensorflow": context.context()._context_handle is not None,
      "jax": bool(bridge is not None and bridge._backends),
      "growth": os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH")}
except Exception as e:
  answers["collection"] = repr(e)
tf.config.experimental.enable_op_determinism()  # As --deterministic does, with no global seed.
try:
  from trainer.bench import ceiling
  answers["ceiling_under_determinism"] = ceiling.matmul_ceiling(tiny=True)["flops_per_sec"]
except Exception as e:
  answers["ceiling_under_determinism"] = repr(e)
print(json.dumps(answers))
"""


@pytest.fixture(scope="session")
def fresh_process_answers() -> dict:
  """What a fresh TensorFlow process reports (_FRESH_PROCESS_PROBE): the intra-op threads after
  hardware.split_cpu(2), which are fixed when TensorFlow starts; whether collecting the suite
  started a framework's devices; and the matmul ceiling measured under op determinism, which
  refuses random ops without a seed unless a global one is set (as every run in the test
  process sets it)."""
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from tests import processes  # pylint: disable=g-import-not-at-top
  result = subprocess.run([sys.executable, "-c", _FRESH_PROCESS_PROBE], cwd=processes.ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return json.loads(result.stdout.strip().splitlines()[-1])
