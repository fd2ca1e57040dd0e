"""Ctrl-C at any moment: one line, exit 130, a valid workdir, and a rerun that completes.

A real SIGINT is sent to this process from inside each phase of a run (start-up, evaluation,
a checkpoint save, the export); the entry point's handling turns it into one line and exit 130.
"""

import gc
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import pytest
import tensorflow as tf

from tests.processes import ROOT
from trainer.data import input_pipeline
from trainer import errors
from trainer.loop import preemption
from trainer.backends.tensorflow import task as task_lib
from trainer.records import checkpointing
from trainer import train


def _ctrl_c_inside(monkeypatch, owner, name):
  """Makes `owner.name` receive a real SIGINT when called, then carry on."""
  original = getattr(owner, name)

  def interrupted(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    return original(*args, **kwargs)

  monkeypatch.setattr(owner, name, interrupted)


PHASES = {
    "start-up": (input_pipeline, "make_input_pipeline"),
    "model": (task_lib.Task, "__init__"),  # Building the model, its optimizer and metrics.
    "evaluation": (task_lib.Task, "evaluate"),
    "checkpoint": (checkpointing.Checkpointer, "save"),
    "export": (keras.Model, "export"),  # The SavedModel, after model.keras is written.
}


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.slow
def test_ctrl_c_in_any_phase_exits_130_and_the_rerun_completes(phase, small_config,
                                                               monkeypatch, capsys):
  config = small_config.replace(epochs=2, max_steps_per_epoch=10, log_every=5,
                                export_saved_model=True)
  with monkeypatch.context() as patch:
    _ctrl_c_inside(patch, *PHASES[phase])
    with pytest.raises(SystemExit) as exited:
      with errors.shown_as_one_line():
        train.train_and_evaluate(config)
  assert exited.value.code == 130
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: Stopped "), lines
  assert "Traceback" not in capsys.readouterr().err

  # Nothing half-written, nothing that looks finished.
  assert not glob.glob(os.path.join(config.output.workdir, "**", "*.tmp*"), recursive=True)
  assert not glob.glob(os.path.join(config.output.workdir, "checkpoints", "*_temp*"))
  assert not os.path.exists(os.path.join(config.output.workdir, "results.json"))

  results = train.train_and_evaluate(config)
  with open(os.path.join(config.output.workdir, "results.json")) as f:
    written = json.loads(f.read(), parse_constant=lambda name: pytest.fail(name))
  assert written["steps"] == 20 and written["test_accuracy"] == results["test_accuracy"]
  assert written["examples_per_sec"] > 0 and written["time_to_first_step_s"] > 0
  assert os.path.isdir(os.path.join(config.output.workdir, "saved_model"))


def _ctrl_c_swallowed_by_a_gc_callback() -> None:
  """Ctrl-C whose KeyboardInterrupt is raised inside a gc callback, where Python prints
  "Exception ignored" and carries on: JAX registers such a callback once imported, and a Ctrl-C
  six seconds into a run was lost there."""
  def callback(phase, info):
    del info  # Unused.
    if phase == "start":
      signal.raise_signal(signal.SIGINT)

  gc.callbacks.append(callback)
  try:
    gc.collect()
  finally:
    gc.callbacks.remove(callback)


def test_a_ctrl_c_swallowed_before_the_loop_still_stops_the_run(monkeypatch, capsys):
  # Python's own hook, which prints what it swallows (pytest's would turn it into a warning).
  monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
  with pytest.raises(SystemExit) as exited:
    with errors.shown_as_one_line():
      _ctrl_c_swallowed_by_a_gc_callback()
      with preemption.StopRequests() as requests:
        seen_by_the_loop = requests.signal_number
  assert seen_by_the_loop == signal.SIGINT  # It saves and stops at its first boundary.
  assert exited.value.code == 130  # And a run that ends anyway ends as stopped.
  err = capsys.readouterr().err
  assert err.strip().startswith("error: Stopped by Ctrl-C"), err  # And no "Exception ignored".
  assert len(err.strip().splitlines()) == 1, err


def _watch(process, path: str, pattern: str, deadline: float) -> float:
  """Waits until a line of `path` matches `pattern`; returns when, or fails at `deadline`."""
  while time.monotonic() < deadline:
    with open(path) as f:
      if re.search(pattern, f.read(), re.MULTILINE):
        return time.monotonic()
    if process.poll() is not None:
      with open(path) as f:
        pytest.fail(f"exited {process.returncode} before {pattern!r}:\n{f.read()}")
    time.sleep(0.2)
  process.kill()
  with open(path) as f:
    pytest.fail(f"no {pattern!r} in time:\n{f.read()}")


def _ctrl_c_and_wait(process, seconds: float) -> float:
  process.send_signal(signal.SIGINT)
  sent = time.monotonic()
  try:
    process.wait(timeout=seconds)
  except subprocess.TimeoutExpired:
    process.kill()
    pytest.fail(f"Ctrl-C did not end the run within {seconds} s")
  return time.monotonic() - sent


@pytest.mark.slow
def test_a_slow_model_shows_progress_soon_and_stops_within_seconds(tmp_path):
  # resnet18 on 64x64x3 images: about a second a step on 2 cores, 1,875 steps an epoch, whose
  # log points (every 100 steps) and fixed 100-step calls were minutes apart. The console's
  # longest silence is 1 s here instead of 30 (tests/lines_every.py): the line with the rate
  # comes after the first call's and the next silence, which a fake clock checks at 30 s.
  command = [sys.executable, "-m", "tests.lines_every", "1", "--model=resnet18",
             "--dataset=synthetic", "--image_shape=64,64,3", "--epochs=1",
             f"--workdir={tmp_path / 'run'}"]
  log = str(tmp_path / "out.txt")
  with open(log, "w") as out:
    process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
  header = _watch(process, log, r"^Epoch 1/1$", time.monotonic() + 120)
  # The line after the first step, then one with the rate and the time left.
  _watch(process, log, r"^  step \d+/1875: .* steps/s, .* of training left$", header + 90)
  assert _ctrl_c_and_wait(process, 20) < 20
  with open(log) as f:
    output = f.read()
  assert process.returncode == 130, output
  assert "Traceback" not in output
  saved = re.search(r"^error: Stopped by signal 2 and saved at step (\d+) of 1875\.", output,
                    re.MULTILINE)
  assert saved, output
  # The one error line is the last word, and nothing is left half-written.
  assert [line for line in output.splitlines() if line.startswith("error:")] == [
      output.strip().splitlines()[-1]]
  assert not glob.glob(str(tmp_path / "run" / "**" / "*.tmp*"), recursive=True)
  assert not glob.glob(str(tmp_path / "run" / "checkpoints" / "*_temp*"))

  # The same command resumes there: the newest checkpoint, which a rerun restores, is that step
  # and reads whole (a rerun's resume from it is test_resume.py's and the phases' above).
  newest = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
  assert newest.endswith(f"-{saved.group(1)}"), newest
  assert tf.train.load_checkpoint(newest).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == int(
      saved.group(1))


@pytest.mark.slow
def test_ctrl_c_while_tensorflow_loads_is_one_line_and_exit_130(tmp_path):
  # 3 s is inside TensorFlow's import on a 2-core VM. Later moments are the phases above, in
  # this process, and the slow model's training; each fault a Ctrl-C found at a moment of its
  # own has a test of its own (test_errors.py, the gc callback above).
  seconds = 3
  workdir = tmp_path / "run"
  process = subprocess.Popen(
      [sys.executable, "-m", "trainer.main", "--dataset=synthetic", "--epochs=50",
       f"--workdir={workdir}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  time.sleep(seconds)
  process.send_signal(signal.SIGINT)
  out, err = process.communicate(timeout=60)
  assert process.returncode == 130, err
  assert "Traceback" not in out + err
  messages = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(messages) == 1 and messages[0].startswith("error: Stopped by"), err
  assert err.strip().splitlines()[-1] == messages[0]  # The last word, and nothing after it.
  assert not glob.glob(str(workdir / "**" / "*.tmp*"), recursive=True)
  assert not glob.glob(str(workdir / "checkpoints" / "*_temp*"))
