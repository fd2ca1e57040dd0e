"""Console progress: a live bar on a terminal, plain lines in files, nothing off the chief."""

import io

from trainer.loop import progress


class Terminal(io.StringIO):

  def isatty(self):
    return True


def test_auto_is_a_bar_on_a_terminal_and_lines_in_a_file():
  assert progress.resolve_mode("auto", True, Terminal()) == "bar"
  assert progress.resolve_mode("auto", True, io.StringIO()) == "lines"
  assert progress.resolve_mode("bar", False, Terminal()) == "none"  # Not the chief.


def test_lines_mode_prints_one_plain_line_per_log_point(capsys):
  shown = progress.EpochProgress(steps_per_epoch=300, epochs=2, mode="lines")
  shown.start_epoch(0)
  shown.update(100, 0.61234, 0.8, logged=True)
  shown.update(150, 0.5, 0.81, logged=False)
  shown.end_epoch(0.4, 0.85)
  out = capsys.readouterr().out
  assert out == ("Epoch 1/2\n  step 100/300: loss 0.6123, accuracy 0.8000\n"
                 "  test loss 0.4000, test accuracy 0.8500\n")
  assert "\r" not in out and "\x1b" not in out


def test_none_mode_prints_only_the_epoch_and_its_test_figures(capsys):
  shown = progress.EpochProgress(steps_per_epoch=300, epochs=1, mode="none")
  shown.start_epoch(0)
  shown.update(100, 0.6, 0.8, logged=True)
  shown.end_epoch(0.4, 0.85)
  assert capsys.readouterr().out == "Epoch 1/1\n  test loss 0.4000, test accuracy 0.8500\n"
