"""How messages quote TensorFlow's errors and long lists: the cause, in one readable line."""

import signal

import pytest
import tensorflow as tf

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
