"""The command line, run as users run it: a real process, its exit code, output and files."""

import json
import os

import pytest

from tests.processes import run_trainer
from trainer import config as config_lib
from trainer import errors
from trainer import train


@pytest.mark.slow
def test_a_preset_with_overrides_runs_mirrored_from_the_command_line(fashion_mnist_dir,
                                                                     tmp_path):
  result = run_trainer("--flagfile=configs/smoke.cfg", "--api=subclass",
                       "--dataset=fashion_mnist", f"--data_dir={fashion_mnist_dir}",
                       "--strategy=mirrored", "--cpu_devices=2", "--epochs=1",
                       "--max_steps_per_epoch=50", "--num_test_examples=300",
                       f"--workdir={tmp_path}")
  assert result.returncode == 0, result.stderr[-2000:]
  results = json.loads((tmp_path / "results.json").read_text())
  assert (results["strategy"], results["num_replicas"], results["api"]) == (
      "mirrored", 2, "subclass")
  # The preset's batch size is kept; its epochs and steps are overridden by later flags.
  assert (results["global_batch_size"], results["epochs"], results["steps"]) == (64, 1, 50)
  lines = result.stdout.splitlines()
  summary = lines[max(i for i, line in enumerate(lines) if line.startswith("Done: ")):]
  assert "test accuracy" in summary[1]  # The summary block comes last.
  assert summary[3].startswith("  goodput ") and summary[4].startswith("  MFU ")
  # --num_test_examples bounds the last evaluation, and every record says so.
  assert "(the first 300 of 10,000 test examples)" in summary[1]
  assert (results["test_examples"], results["test_split_examples"]) == (300, 10_000)


@pytest.mark.parametrize("flag, message", [
    ("--api=graph", "value should be one of <sequential|functional|subclass>"),
    ("--batch_size=0", "--batch_size=0: 0 is not a positive integer"),
    ("--precision=float8", "value should be one of"),
])
def test_bad_flag_values_give_absls_usage_error(flag, message, tmp_path):
  result = run_trainer(flag, f"--workdir={tmp_path}", timeout=60)
  assert result.returncode != 0
  assert message in result.stderr
  assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_missing_data_file_is_a_one_line_error_not_a_traceback(tmp_path):
  result = run_trainer("--dataset=fashion_mnist", f"--data_dir={tmp_path}",
                       f"--workdir={tmp_path / 'run'}", timeout=60)
  assert result.returncode == 2
  assert "train-images-idx3-ubyte.gz is missing" in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()


def test_uneven_batch_is_refused_with_the_fix(capsys, tmp_path):
  # The command's own path, in this process: every refusal reaches the console and the exit
  # code through errors.shown_as_one_line, which the test above runs in a real process.
  with pytest.raises(SystemExit) as exited:
    with errors.shown_as_one_line():
      train.train_and_evaluate(config_lib.Config.from_flags(
          dataset="synthetic", strategy="mirrored", cpu_devices=2, batch_size=33,
          workdir=str(tmp_path / "run")))
  assert exited.value.code == 2
  err = capsys.readouterr().err
  assert "Use a multiple of 2, such as 32 or 34" in err and len(err.splitlines()) == 1, err


def test_helpshort_shows_the_users_flags_and_presets_not_developer_notes():
  result = run_trainer("--helpshort", timeout=60)
  assert "--model" in result.stdout and "--flagfile=FILE" in result.stdout
  assert "This file only parses" not in result.stdout
