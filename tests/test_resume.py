"""Never lose training: kill -9 and SIGTERM then resume, damaged checkpoints, NaN, exports."""

import glob
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from tests import datasets
from tests import processes
from tests.processes import ROOT
from trainer import config as config_lib
from trainer.data import input_pipeline
from trainer import errors
from trainer import evaluate
from trainer.records import events as events_lib
from trainer.records import export
from trainer.records import goodput as goodput_lib
from trainer.records import run_record
from trainer.records import workdir as workdir_lib
from trainer import train


def checkpoint_steps(workdir) -> list:
  names = glob.glob(os.path.join(str(workdir), workdir_lib.CHECKPOINT_DIR, "ckpt-*.index"))
  return sorted(int(os.path.basename(name)[5:-6]) for name in names)


def logged_steps(folder, tag="loss") -> list:
  accumulator = event_accumulator.EventAccumulator(
      str(folder), size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return [event.step for event in accumulator.Tensors(tag)]


def _killed_at(settings: dict, workdir, kill_at) -> None:
  """Runs the trainer's command line on `settings` in `workdir`, killed with kill -9 once it
  has logged each step of `kill_at` in turn: a process each, each after the first resuming."""
  for step in kill_at:
    killed = processes.run_module("tests.signalled_at_step", "KILL", str(step),
                                  *processes.command_line(settings), f"--workdir={workdir}")
    # SIGKILL: its workdir lock goes with it, so the rerun can take it.
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert checkpoint_steps(workdir)[-1] < step  # The steps since were trained and lost.
    assert not os.path.exists(workdir / run_record.RESULTS_FILE)


# Every setting of the training recipe at once: each keeps state across the kill (momentum, the
# schedule's step, the moving average, the best so far) or changes where boundaries fall.
RECIPE = dict(optimizer="sgd", nesterov=True, learning_rate=0.05, weight_decay=1e-4,
              warmup_steps=30, lr_schedule="cosine", label_smoothing=0.1, clip_norm=2.0,
              grad_accum_steps=2, ema_decay=0.99, keep_best="accuracy")
# 3 epochs of 40 steps: a checkpoint and an evaluation every 20 steps, the scalars every 10.
# The evaluations during training (the best model's) cover 2 batches, the last one the first
# 1,000 test examples: what is compared is their figures, not how good they are. The exports
# (best/'s at each better evaluation too) are model.keras only: their weights are compared.
RESUMABLE = dict(epochs=3, max_steps_per_epoch=40, checkpoint_every=20, eval_every=20,
                 eval_steps=2, num_test_examples=1000, log_every=10, deterministic=True,
                 progress="none", export_saved_model=False, **RECIPE)
TOTAL_STEPS = 120


def _write_shapes(data_dir) -> None:
  """640 training images (JPEG and PNG) of 96x96, 80 tall and wide test ones."""
  datasets.write_shape_folder(data_dir, "train", 480, 96, 96, seed=0, extension="jpg")
  datasets.write_shape_folder(data_dir, "train", 160, 96, 96, seed=1)
  datasets.write_shape_folder(data_dir, "test", 40, 96, 128, seed=2, extension="jpg")
  datasets.write_shape_folder(data_dir, "test", 40, 128, 96, seed=3)


# The default strategy trains the mlp on images cropped from their originals (JPEG and PNG, held
# encoded) in packs of steps: each example's box and flip must follow (seed, epoch, its
# position in the epoch), not the process that drew it; it is killed twice, in epochs 1 and 2.
# Mirrored and JAX augment and normalise whole batches, which must follow the step. Each kill
# falls between two checkpoints, after a logged call, and each rerun resumes inside an epoch
# (from step 20 or 60; 40 would be an epoch's start). The kills are processes of the trainer's
# command line; the rerun after the last and the straight run to compare with run in this
# process (the default strategy's) or in one process of their own (tests/runs_in_a_process.py):
# JAX's, and mirrored's, whose split CPU gives each device its share of the threads as in the
# killed processes (this process split its CPU with the threads left whole, and the thread count
# moves the sums' rounding). Neither run can inherit anything from a killed process, and the
# rerun goes first, so the straight run cannot leave it anything either.
@pytest.mark.slow
@pytest.mark.parametrize("strategy_settings, kill_at", [
    (dict(strategy="default", image_size=(72, 72), augment="crop_flip", normalize=True,
          eval_crop=0.9, batch_size=16), (30, 70)),
    (dict(strategy="mirrored", cpu_devices=2, augment="crop_flip", normalize=True,
          batch_size=64), (70,)),
    (dict(backend="jax", strategy="default", augment="crop_flip", normalize=True,
          batch_size=64), (70,))],
    ids=["default", "mirrored", "jax"])
def test_sigkill_mid_epoch_then_rerun_ends_bit_identical(strategy_settings, kill_at,
                                                         fashion_subset, tmp_path, caplog,
                                                         restores_op_determinism):
  if "image_size" in strategy_settings:
    _write_shapes(tmp_path / "shapes")
    data_settings = dict(data_dir=str(tmp_path / "shapes"))
  else:  # 4,000 training images: an epoch of 40 steps of 64 draws from all of them.
    data_settings = dict(dataset="fashion_mnist", data_dir=str(fashion_subset / "idx"))
  settings = {**RESUMABLE, **data_settings, **strategy_settings}
  killed_dir, straight_dir = tmp_path / "killed", tmp_path / "straight"
  _killed_at(settings, killed_dir, kill_at)
  if strategy_settings.get("backend") == "jax" or strategy_settings["strategy"] == "mirrored":
    runs = [{**settings, "workdir": str(workdir)} for workdir in (killed_dir, straight_dir)]
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    done = processes.run_module("tests.runs_in_a_process", str(tmp_path / "runs.json"))
    assert done.returncode == 0, done.stderr[-3000:]
  else:
    last_checkpoint = checkpoint_steps(killed_dir)[-1]
    with caplog.at_level(logging.INFO, logger="absl"):
      train.train_and_evaluate(config_lib.Config.from_flags(**settings,
                                                            workdir=str(killed_dir)))
    assert f"Resuming from step {last_checkpoint} of {TOTAL_STEPS}." in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="absl"):
      train.train_and_evaluate(config_lib.Config.from_flags(**settings,
                                                            workdir=str(straight_dir)))
    straight_log = caplog.text

  expected = run_record.read_results(straight_dir)
  got = run_record.read_results(killed_dir)
  assert got["steps"] == expected["steps"] == TOTAL_STEPS
  assert (got["processes"], expected["processes"]) == (len(kill_at) + 1, 1)
  # Bit-identical weights and moving average; the same best model, known across the kills.
  for field in ("weights_sha256", "ema_weights_sha256", "test_accuracy", "test_accuracy_ema",
                "best_step", "best_test_accuracy"):
    assert got[field] == expected[field], field
  assert expected["ema_weights_sha256"] and expected["best_step"]
  assert _digest(export.load_keras_model(str(killed_dir / "best"))) == _digest(
      export.load_keras_model(str(straight_dir / "best")))
  # TensorBoard: every logged step once, in order, across the kills.
  assert logged_steps(killed_dir / "train") == list(range(10, TOTAL_STEPS + 1, 10))
  _assert_the_kills_goodput(got, expected, killed_dir)
  assert logged_steps(killed_dir / "eval", "accuracy_ema") == list(
      range(20, TOTAL_STEPS + 1, 20))
  if "image_size" in strategy_settings:
    assert "held in memory" in straight_log and "encoded" in straight_log
    assert expected["input_wait_share"] > 0  # Measured under --deterministic too.
    assert expected["steps_per_xla_call"] > 1


def _assert_the_kills_goodput(got, expected, killed_dir) -> None:
  """A process per kill and the rerun; the steps each killed one trained after its last
  checkpoint (up to its last logged call) lost; every second in one part; less than all of it
  kept."""
  figures = got["goodput"]
  assert figures["processes"] == got["processes"] >= 2
  events = events_lib.read_events(os.path.join(str(killed_dir), events_lib.EVENTS_FILE))
  starts = [index for index, event in enumerate(events) if event["event"] == "process_start"]
  lost = 0
  for start, rerun in zip(starts, starts[1:]):
    killed = events[start:rerun]
    last_checkpoint = max(event["step"] for event in killed if event["event"] == "checkpoint")
    last_call = [event for event in killed if event["event"] == "call"][-1]["last_step"]
    assert events[rerun]["step"] == last_checkpoint  # The rerun resumed from it.
    assert "stop" not in [event["event"] for event in killed]  # kill -9 leaves no stop.
    assert last_call > last_checkpoint
    lost += last_call - last_checkpoint
  assert figures["lost_steps"] == lost
  assert figures["productive_steps"] == got["steps"]
  assert sum(figures[part] for part in goodput_lib.PARTS) == pytest.approx(figures["wall_s"])
  assert 0 < figures["fraction"] < 1 and figures["lost_s"] > 0
  assert got["wall_time_s"] == pytest.approx(figures["wall_s"] - figures["between_processes_s"])
  assert expected["goodput"]["lost_steps"] == 0 and expected["goodput"]["processes"] == 1


@pytest.mark.slow
def test_a_process_killed_before_its_first_checkpoint_is_one_of_the_runs_processes(
    small_config, monkeypatch):
  # The first process diverges at step 7, before the epoch's end (its one checkpoint): the rerun
  # starts afresh from step 0, and the run's log keeps the first process and its lost steps.
  original = input_pipeline.InputPipeline.training_batches

  def poisoned(self, start_step, num_epochs, pack=1):
    batches = original(self, start_step, num_epochs).enumerate(start_step).map(
        lambda index, batch: (tf.where(index == 6, np.nan, batch[0]), batch[1]))
    return batches.batch(pack, drop_remainder=True) if pack > 1 else batches

  config = small_config.replace(checkpoint_every=0, steps_per_loop=4)
  monkeypatch.setattr(input_pipeline.InputPipeline, "training_batches", poisoned)
  with pytest.raises(errors.Diverged, match="step 7"):
    train.train_and_evaluate(config)
  monkeypatch.undo()
  assert checkpoint_steps(config.output.workdir) == []
  results = train.train_and_evaluate(config)
  figures = results["goodput"]
  assert results["processes"] == figures["processes"] == 2
  events = events_lib.read_events(os.path.join(config.output.workdir, events_lib.EVENTS_FILE))
  assert [event["why"] for event in events if event["event"] == "stop"] == ["error", "finished"]
  # Every step the first process trained, up to the end of the call that diverged, is lost.
  first_calls = [event for event in events[:events.index(
      [event for event in events if event["event"] == "process_start"][1])]
                 if event["event"] == "call"]
  assert figures["lost_steps"] == first_calls[-1]["last_step"] >= 7
  assert figures["productive_steps"] == results["steps"] == 20


def _digest(model) -> str:
  return hashlib.sha256(b"".join(w.numpy().tobytes() for w in model.weights)).hexdigest()


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_and_says_how_to_resume(tmp_path):
  # Epochs of 100 steps with checkpoints only at their ends: any other saved step was saved
  # because of the signal. The run stops itself at step 150, well inside epoch 2, so the save
  # the signal causes cannot fall on an epoch's end, and holds its workdir there.
  settings = dict(dataset="synthetic", epochs=5, batch_size=8, max_steps_per_epoch=100,
                  log_every=10, checkpoint_every=0, progress="none",
                  workdir=str(tmp_path / "run"))
  with open(tmp_path / "stderr.txt", "w") as stderr:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.signalled_at_step", "STOP", "150",
         *processes.command_line(settings)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
  try:
    _, status = os.waitpid(process.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
      process.returncode = os.waitstatus_to_exitcode(status)  # It ended, and is reaped here.
      pytest.fail((tmp_path / "stderr.txt").read_text()[-3000:])
    # A second trainer on the live workdir: refused at once, naming the holder.
    with pytest.raises(errors.UserError,
                       match=f"is in use by process {process.pid} on ") as refused:
      train.train_and_evaluate(config_lib.Config.from_flags(**settings))
    assert refused.value.exit_code == errors.BAD_INPUT
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGCONT)
    process.wait(timeout=60)
  finally:
    process.kill()  # Only if it is still there, stopped or hung; a no-op once it has ended.
  stderr = (tmp_path / "stderr.txt").read_text()
  assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert "Rerun the same command to resume" in stderr
  saved_step = checkpoint_steps(settings["workdir"])[-1]
  assert saved_step > 100 and saved_step % 100 != 0
  assert f"saved at step {saved_step} of 500" in stderr
  assert logged_steps(os.path.join(settings["workdir"], "train"))[-1] <= saved_step


@pytest.mark.slow
def test_damaged_newest_checkpoint_falls_back_to_the_previous(small_config, caplog):
  config = small_config.replace(checkpoint_every=5)
  train.train_and_evaluate(config)
  assert checkpoint_steps(config.output.workdir) == [10, 15, 20]
  newest = glob.glob(os.path.join(config.output.workdir, "checkpoints", "ckpt-20.data-*"))[0]
  with open(newest, "r+b") as f:
    f.truncate(100)
  results = train.train_and_evaluate(config.replace(epochs=2))
  assert results["steps"] == 40
  assert "ckpt-20 cannot be read" in caplog.text
  assert "Resumed from " in caplog.text and "ckpt-15, an older checkpoint" in caplog.text


def test_unreadable_checkpoints_stop_the_run_instead_of_starting_afresh(small_config):
  config = small_config.replace(checkpoint_every=10)
  train.train_and_evaluate(config)
  for data in glob.glob(os.path.join(config.output.workdir, "checkpoints", "ckpt-*.data-*")):
    with open(data, "r+b") as f:
      f.truncate(10)
  with pytest.raises(errors.UserError, match="None of the checkpoints.*--overwrite"):
    train.train_and_evaluate(config.replace(epochs=2))


@pytest.mark.slow
def test_changed_math_is_refused_and_more_epochs_continue(small_config, caplog, capsys):
  small_config = small_config.replace(export_saved_model=True)
  train.train_and_evaluate(small_config)
  saved_model = os.path.join(small_config.output.workdir, workdir_lib.SAVED_MODEL_DIR)
  assert os.path.isdir(saved_model)
  with pytest.raises(errors.UserError) as refused:
    train.train_and_evaluate(small_config.replace(api="subclass", batch_size=32, epochs=2))
  assert "api: 'functional' in the saved run, 'subclass' now" in str(refused.value)
  assert "batch_size: 64 in the saved run, 32 now" in str(refused.value)
  assert "seed" not in str(refused.value)

  with caplog.at_level(logging.INFO, logger="absl"):
    continued = train.train_and_evaluate(small_config.replace(epochs=3, eval_steps=2,
                                                              export_saved_model=False))
  assert continued["steps"] == 60
  # Settings that leave the math alone may change; config.json says which, and from which step.
  assert ("Resuming from step 20 of 60 with changed settings, recorded in config.json: "
          "epochs 1 -> 3, export_saved_model True -> False, eval_steps 0 -> 2") in caplog.text
  saved = workdir_lib.read_run_config(small_config.output.workdir)
  assert (saved["epochs"], saved["eval_steps"]) == (3, 2)
  assert saved["changes"] == [
      {"step": 20, "setting": "epochs", "was": 1, "now": 3},
      {"step": 20, "setting": "export_saved_model", "was": True, "now": False},
      {"step": 20, "setting": "eval_steps", "was": 0, "now": 2}]
  # model.keras only: the first end's SavedModel, of the weights of step 20, is gone with it.
  assert list(continued["exports"]) == ["keras"] and not os.path.exists(saved_model)
  assert f"{small_config.output.workdir}: results.json, model.keras; tensorboard" in (
      capsys.readouterr().out)
  with pytest.raises(errors.UserError, match="holds no saved_model/: its run was made with "
                     "--noexport_saved_model. Evaluate its model.keras: leave --format out."):
    evaluate.evaluate_export(small_config.output.workdir, "saved_model")
  # Asked for again, the finished run's SavedModel is written from its final checkpoint.
  again = train.train_and_evaluate(small_config.replace(epochs=3, eval_steps=2))
  assert "already finished all 60 steps, without a SavedModel: wrote it now (saved_model/)" in (
      capsys.readouterr().out)
  assert list(again["exports"]) == ["keras", "saved_model"] and os.path.isdir(saved_model)
  assert workdir_lib.read_run_config(small_config.output.workdir)["changes"][-1] == {
      "step": 60, "setting": "export_saved_model", "was": False, "now": True}
  figures = evaluate.evaluate_export(small_config.output.workdir, "saved_model")
  assert figures["test_accuracy"] == pytest.approx(continued["test_accuracy"], abs=1e-6)
  assert logged_steps(os.path.join(small_config.output.workdir, "train")) == list(range(10, 61, 10))

  fresh = train.train_and_evaluate(small_config.replace(seed=5, overwrite=True))
  assert (fresh["steps"], fresh["seed"]) == (20, 5)


def test_a_finished_run_is_reported_not_retrained(finished_runs, capsys):
  config, first = finished_runs["functional"]
  again = train.train_and_evaluate(config)
  assert again == json.loads(json.dumps(first))
  assert "already finished all 200 steps" in capsys.readouterr().out


def test_injected_nan_stops_with_the_step_and_keeps_the_checkpoint(small_config, monkeypatch):
  original = input_pipeline.InputPipeline.training_batches

  def poisoned(self, start_step, num_epochs, pack=1):
    # The 15th batch of the run carries a NaN pixel; batches are packed after poisoning.
    batches = original(self, start_step, num_epochs).enumerate(start_step).map(
        lambda index, batch: (tf.where(index == 14, np.nan, batch[0]), batch[1]))
    return batches.batch(pack, drop_remainder=True) if pack > 1 else batches

  monkeypatch.setattr(input_pipeline.InputPipeline, "training_batches", poisoned)
  config = small_config.replace(checkpoint_every=10, steps_per_loop=4)
  with pytest.raises(errors.Diverged, match="became nan at step 15.*checkpoint \\(step 10\\)"):
    train.train_and_evaluate(config)
  assert errors.Diverged.exit_code == 4
  assert checkpoint_steps(config.output.workdir) == [10]
  assert not os.path.exists(os.path.join(config.output.workdir, run_record.RESULTS_FILE))


@pytest.mark.parametrize("api", config_lib.APIS)
@pytest.mark.slow
def test_exports_reload_and_reproduce_the_test_accuracy(api, finished_runs):
  # The runs evaluated 2 batches during training (--eval_steps=2): results.json's figures, as
  # trainer.evaluate's, are over the whole test split.
  config, results = finished_runs[api]
  assert results["test_examples"] == 1000
  for export_format in ("keras", "saved_model"):
    figures = evaluate.evaluate_export(config.output.workdir, export_format)
    assert figures["num_examples"] == 1000
    assert figures["test_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)
    assert figures["test_loss"] == pytest.approx(results["test_loss"], rel=1e-5)
  model = export.load_keras_model(config.output.workdir)
  assert model.count_params() == 203_530


@pytest.mark.slow
def test_trainer_evaluate_reproduces_a_bfloat16_runs_figures_over_the_whole_test_split(
    fashion_mnist_dir, tmp_path):
  # --eval_steps=2 limits only the evaluations during training; results.json and
  # trainer.evaluate both cover the 10,000 test images, in a graph (eagerly, bfloat16 rounds
  # differently: 0.7786 against 0.7790 for this run before).
  config = config_lib.Config.from_flags(
      model="cnn", dataset="fashion_mnist", data_dir=fashion_mnist_dir,
                             epochs=1, max_steps_per_epoch=100, eval_steps=2,
                             precision="mixed_bfloat16", progress="none",
                             workdir=str(tmp_path / "cnn"))
  results = train.train_and_evaluate(config)
  figures = evaluate.evaluate_export(config.output.workdir)
  assert results["test_examples"] == figures["num_examples"] == 10_000
  assert figures["test_accuracy"] == results["test_accuracy"]
  assert figures["test_loss"] == pytest.approx(results["test_loss"], rel=1e-5)
