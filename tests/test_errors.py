"""How messages quote TensorFlow's errors and long lists: the cause, in one readable line."""

import os
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

from tests import processes
from trainer import errors


def test_a_tensorflow_error_is_quoted_without_its_function_and_node_names():
  error = tf.errors.InvalidArgumentError(
      None, None, "{{function_node __wrapped__IteratorGetNext_output_types_2_device_/job:"
      "localhost/replica:0/task:0/device:CPU:0}} Input to DecodePng has length 40 "
      "[[{{node DecodePng}}]] [Op:IteratorGetNext] name: \nmore context")
  assert errors.tensorflow_cause(error) == "Input to DecodePng has length 40"
  assert errors.tensorflow_cause(ValueError("")) == "ValueError"


def test_a_long_list_is_summarised_and_counts_take_the_right_noun():
  names = [f"layer_{index}/bias" for index in range(41)]
  assert errors.summarized(names) == "layer_0/bias, layer_1/bias, layer_2/bias and 38 more"
  assert errors.summarized(names[:4]) == ", ".join(names[:4])
  assert [errors.plural(n, "file") for n in (0, 1, 2)] == ["0 files", "1 file", "2 files"]
  assert errors.plural(1200, "run") == "1,200 runs"


def test_ctrl_c_that_tensorflow_turns_into_another_error_is_still_one_line_and_130(
    monkeypatch, capsys):
  # Autograph's context manager fails an assert when Ctrl-C interrupts a trace (seen while a
  # resumed run built its dataset): the exit is Ctrl-C's, not an AssertionError's traceback.
  monkeypatch.setattr(errors, "_interrupting_signal", None)
  with pytest.raises(SystemExit) as exited:
    with errors.shown_as_one_line():
      try:
        errors._raise_interrupted(signal.SIGINT, None)  # pylint: disable=protected-access
      except KeyboardInterrupt:
        raise AssertionError  # pylint: disable=raise-missing-from
  assert exited.value.code == 130
  assert capsys.readouterr().err.startswith("error: Stopped by Ctrl-C;")


def test_an_error_without_a_signal_keeps_its_traceback(monkeypatch):
  monkeypatch.setattr(errors, "_interrupting_signal", None)
  with pytest.raises(AssertionError):
    with errors.shown_as_one_line():
      raise AssertionError


def test_ctrl_c_that_ends_code_run_from_a_string_still_exits_130(tmp_path):
  # While TensorFlow loads, namedtuple and pybind11 modules run code from strings; CPython marks
  # a KeyboardInterrupt that ends such code as unhandled even when caught, and `python -m` then
  # died by SIGINT (-2) after the one line.
  (tmp_path / "interrupted_string.py").write_text(
      "from trainer import errors\n"
      "with errors.shown_as_one_line():\n"
      "  exec('raise KeyboardInterrupt')\n")
  done = subprocess.run([sys.executable, "-m", "interrupted_string"], cwd=tmp_path,
                        env={**os.environ, "PYTHONPATH": processes.ROOT}, capture_output=True,
                        text=True, timeout=60)
  assert done.returncode == 130, done.stderr
  assert done.stderr.startswith("error: Stopped by Ctrl-C;"), done.stderr


def test_ctrl_c_inside_a_deferred_block_arrives_at_its_end():
  # JAX's native module crashed the process when a Ctrl-C interrupted its import.
  finished = []
  # Python's own handler, whatever an earlier test in this process left.
  outer = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with pytest.raises(KeyboardInterrupt):
      with errors.interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        signal.sigtimedwait([], 0.1)  # Where a handler would have run.
        finished.append(True)
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  finally:
    signal.signal(signal.SIGINT, outer)
