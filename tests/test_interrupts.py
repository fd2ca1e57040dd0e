"""Ctrl-C at any moment: one line, exit 130, a valid workdir, and a rerun that completes.

A real SIGINT is sent to this process from inside each phase of a run (start-up, evaluation,
a checkpoint save, the export); the entry point's handling turns it into one line and exit 130.
"""

import glob
import json
import os
import signal

import keras
import pytest

from trainer.data import input_pipeline
from trainer import errors
from trainer.loop import task as task_lib
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
    "evaluation": (task_lib.Task, "evaluate"),
    "checkpoint": (checkpointing.Checkpointer, "save"),
    "export": (keras.Model, "export"),  # The SavedModel, after model.keras is written.
}


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.slow
def test_ctrl_c_in_any_phase_exits_130_and_the_rerun_completes(phase, small_config,
                                                               monkeypatch, capsys):
  config = small_config.replace(epochs=2, max_steps_per_epoch=10, log_every=5)
  with monkeypatch.context() as patch:
    _ctrl_c_inside(patch, *PHASES[phase])
    with pytest.raises(SystemExit) as exited:
      with errors.shown_as_one_line():
        train.train_and_evaluate(config)
  assert exited.value.code == 130
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: Stopped by"), lines
  assert "Traceback" not in capsys.readouterr().err

  # Nothing half-written, nothing that looks finished.
  assert not glob.glob(os.path.join(config.workdir, "**", "*.tmp*"), recursive=True)
  assert not glob.glob(os.path.join(config.workdir, "checkpoints", "*_temp*"))
  assert not os.path.exists(os.path.join(config.workdir, "results.json"))

  results = train.train_and_evaluate(config)
  with open(os.path.join(config.workdir, "results.json")) as f:
    written = json.loads(f.read(), parse_constant=lambda name: pytest.fail(name))
  assert written["steps"] == 20 and written["test_accuracy"] == results["test_accuracy"]
  assert written["examples_per_sec"] > 0 and written["time_to_first_step_s"] > 0
  assert os.path.isdir(os.path.join(config.workdir, "saved_model"))
