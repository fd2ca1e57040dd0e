"""Machine limits and slips: the workdir lock, unusable workdirs, a full disk, out of memory and
damaged records each end in one clear error with nothing lost."""

import errno
import json
import os
from pathlib import Path
import subprocess

import pytest
import tensorflow as tf

from trainer import compare
from trainer.data import input_pipeline
from trainer import errors
from trainer import evaluate
from trainer.backends.tensorflow import task as task_lib
from trainer.records import run_record
from trainer.records import workdir as workdir_lib
from trainer.records import workdir_lock
from trainer import train


# ---------------------------------------------------------------- The lock and the workdir.
def test_a_held_workdir_is_refused_naming_the_holder(tmp_path):
  with workdir_lock.locked(str(tmp_path)):
    with pytest.raises(errors.UserError, match=rf"in use by process {os.getpid()} on .* "
                                               r"\(started .*\).*another --workdir"):
      # A second open file takes its own flock, as a second process would.
      with workdir_lock.locked(str(tmp_path)):
        pass
  with workdir_lock.locked(str(tmp_path)):  # Released on exit: the next run takes it.
    pass


@pytest.mark.parametrize("make, workdir, message", [
    (lambda root: (root / "file").write_text("x"), "file", "is a file, not a folder"),
    (lambda root: None, "/proc/no/such/run", "cannot be created"),
])
def test_an_unusable_workdir_is_refused_before_any_data_loads(small_config, tmp_path,
                                                             monkeypatch, make, workdir,
                                                             message):
  make(tmp_path)
  monkeypatch.setattr(input_pipeline, "make_input_pipeline",
                      lambda config: pytest.fail("the data loaded before the workdir check"))
  with pytest.raises(errors.UserError, match=message):
    train.train_and_evaluate(small_config.replace(workdir=str(tmp_path / workdir)))


@pytest.fixture
def tmpfs(tmp_path):
  """A real small filesystem mounted at tmp_path/mnt (as root on the project's machines)."""
  mount_point = tmp_path / "mnt"
  mount_point.mkdir()

  def mount(*options):
    return subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs",
                           str(mount_point)], capture_output=True, text=True)
  if mount("size=6m").returncode:
    pytest.skip("mounting a tmpfs is refused here (needs root)")
  yield mount_point
  subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def _remount(mount_point, *options):
  subprocess.run(["mount", "-o", ",".join(("remount", *options)), str(mount_point)], check=True)


def test_a_read_only_filesystem_is_refused_before_any_data_loads(small_config, tmpfs):
  (tmpfs / "existing").mkdir()
  _remount(tmpfs, "ro")
  for workdir, message in (("existing", "is not writable: Read-only file system"),
                           ("new", "cannot be created: Read-only file system")):
    with pytest.raises(errors.UserError, match=message):
      train.train_and_evaluate(small_config.replace(workdir=str(tmpfs / workdir)))


@pytest.mark.slow
def test_a_full_disk_stops_with_its_code_and_the_rerun_resumes_bit_identical(small_config,
                                                                             tmpfs, tmp_path):
  # mlp checkpoints are 2.4 MB (weights and Adam's two moments): the third does not fit in 6 MB.
  config = small_config.replace(max_steps_per_epoch=100, checkpoint_every=20,
                                workdir=str(tmpfs / "run"))
  with pytest.raises(errors.DiskFull, match=r"writing the checkpoint of step 60 to .*free some "
                                            r"space and rerun") as raised:
    train.train_and_evaluate(config)
  assert raised.value.exit_code == errors.DISK_FULL == 5
  checkpoints = os.path.join(config.output.workdir, workdir_lib.CHECKPOINT_DIR)
  assert sorted(os.listdir(checkpoints)) == [  # The failed save left nothing behind.
      "checkpoint", "ckpt-20.data-00000-of-00001", "ckpt-20.index",
      "ckpt-40.data-00000-of-00001", "ckpt-40.index"]

  _remount(tmpfs, "size=64m")  # Space freed.
  resumed = train.train_and_evaluate(config)
  straight = train.train_and_evaluate(config.replace(workdir=str(tmp_path / "straight")))
  assert resumed["steps"] == 100
  assert resumed["weights_sha256"] == straight["weights_sha256"]


def _no_space(*args, **kwargs):
  raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("patched, what", [
    # config.json is the first file a run writes: json.dump fails inside the atomic writer.
    ("trainer.safe_files.json.dump", "config.json"),
    ("tensorflow.summary.scalar", "TensorBoard events"),
    ("tensorflow.train.CheckpointManager.save", "checkpoint of step 10"),
    ("keras.Model.save", "model.keras export"),
    ("keras.Model.export", "SavedModel export"),
])
def test_each_write_names_what_filled_the_disk(small_config, monkeypatch, patched, what):
  monkeypatch.setattr(patched, _no_space)
  # Without XLA: the writes are the same, and the compile would be most of each run.
  config = small_config.replace(checkpoint_every=10, jit_compile=False,
                                export_saved_model=True)
  with pytest.raises(errors.DiskFull, match=f"writing the {what} to"):
    train.train_and_evaluate(config)
  assert not run_record.has_results(config.output.workdir)
  leftovers = [name for _, _, files in os.walk(config.output.workdir) for name in files
               if ".tmp" in name or "_temp" in name]
  assert not leftovers


@pytest.mark.slow
def test_results_json_on_a_full_disk_is_named_and_the_rerun_writes_it(small_config,
                                                                      monkeypatch):
  monkeypatch.setattr(workdir_lib.json, "dump", _failing_for_results(workdir_lib.json.dump))
  with pytest.raises(errors.DiskFull, match="writing the results.json to"):
    train.train_and_evaluate(small_config)
  monkeypatch.undo()
  results = train.train_and_evaluate(small_config)  # Resumes from the last checkpoint.
  assert results["steps"] == 20 and results["processes"] == 2
  # This process trained no step, so it has no training loss: null in strict JSON, not NaN.
  text = (Path(small_config.output.workdir) / workdir_lib.RESULTS_FILE).read_text()
  strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in results.json"))
  assert strict["train_loss"] is None and strict["test_accuracy"] > 0.5


def _failing_for_results(dump):
  def maybe_fail(values, f, **kwargs):
    if "weights_sha256" in values:
      _no_space()
    return dump(values, f, **kwargs)
  return maybe_fail


@pytest.mark.slow
def test_evaluate_and_compare_read_a_run_whose_workdir_is_held(finished_runs):
  config, results = finished_runs["functional"]
  with workdir_lock.locked(config.output.workdir):  # As a live rerun of it would hold it.
    figures = evaluate.evaluate_export(config.output.workdir)
    runs = compare.load_runs(os.path.dirname(config.output.workdir))
  assert figures["test_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)
  assert config.output.workdir in [run["workdir"] for run in runs]


# ---------------------------------------------------------------- Memory and damaged records.
def test_a_model_too_large_for_memory_is_one_line_with_its_size(small_config, monkeypatch):
  # What TensorFlow raises for hidden_units=1e9 (measured: after its allocator retries for 10 s,
  # hence injected here).
  def out_of_memory(*args, **kwargs):
    raise tf.errors.ResourceExhaustedError(
        None, None, "OOM when allocating tensor with shape[784,1000000000] and type float on "
        "/job:localhost/replica:0/task:0/device:CPU:0 by allocator mklcpu")
  monkeypatch.setattr(task_lib.Task, "__init__", out_of_memory)
  with pytest.raises(errors.UserError, match=r"Out of memory: the model \(795,000,000,010 "
                                             r"parameters\) with --batch_size=64 .*OOM when "
                                             r"allocating tensor with shape\[784,1000000000\]"):
    train.train_and_evaluate(small_config.replace(hidden_units=1_000_000_000))
  assert not os.path.exists(small_config.output.workdir)  # Nothing left behind.


@pytest.mark.parametrize("name", [workdir_lib.CONFIG_FILE, workdir_lib.RESULTS_FILE])
def test_a_damaged_record_is_named_not_a_json_traceback(small_config, tmp_path, name):
  config = small_config
  damaged = tmp_path / "run"
  os.makedirs(damaged)
  (damaged / name).write_text('{"api": "functional", "seed": ')  # Cut short.
  read = (workdir_lib.read_run_config if name == workdir_lib.CONFIG_FILE
          else run_record.read_results)
  with pytest.raises(errors.UserError, match=f"{name} is damaged .*--overwrite"):
    read(str(damaged))
  if name == workdir_lib.CONFIG_FILE:
    # The trainer refuses such a folder with that message, and touches nothing in it.
    with pytest.raises(errors.UserError, match="is damaged"):
      train.train_and_evaluate(config.replace(workdir=str(damaged)))
    assert set(os.listdir(damaged)) == {name, workdir_lib.LOCK_FILE}


def test_a_nan_input_that_leaves_the_loss_finite_still_stops_the_run_at_its_step(small_config,
                                                                                 monkeypatch):
  # Without XLA, TensorFlow's CPU ReLU turns a NaN into 0: the loss of the poisoned batch stays
  # finite while its gradients, and then the weights, become NaN. The run must stop there, as
  # for a NaN loss, instead of finishing and exporting NaN weights.
  original = input_pipeline.InputPipeline.training_batches

  def poisoned(self, start_step, num_epochs, pack=1):
    batches = original(self, start_step, num_epochs).enumerate(start_step).map(
        lambda index, batch: (tf.where(index == 14, float("nan"), batch[0]), batch[1]))
    return batches.batch(pack, drop_remainder=True) if pack > 1 else batches

  monkeypatch.setattr(input_pipeline.InputPipeline, "training_batches", poisoned)
  config = small_config.replace(checkpoint_every=10, steps_per_loop=4, jit_compile=False)
  with pytest.raises(errors.Diverged, match="at step 15.*checkpoint \\(step 10\\)"):
    train.train_and_evaluate(config)
  assert not os.path.exists(os.path.join(config.output.workdir, run_record.RESULTS_FILE))
