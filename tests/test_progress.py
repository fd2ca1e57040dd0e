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


def test_lines_mode_also_prints_after_the_first_call_and_after_30_silent_seconds(capsys):
  now = [0.0]
  shown = progress.EpochProgress(steps_per_epoch=1000, epochs=1, mode="lines",
                                 clock=lambda: now[0])
  shown.start_epoch(0)
  shown.update(1, 2.3, 0.1, logged=False)  # The first call: a line, though no log point.
  now[0] = 29.0
  shown.update(20, 2.0, 0.2, logged=False, steps_per_sec=0.7, steps_left=980)  # Too soon.
  now[0] = 31.0
  shown.update(22, 1.9, 0.25, logged=False, steps_per_sec=0.7, steps_left=978)
  assert capsys.readouterr().out.splitlines() == [
      "Epoch 1/1", "  step 1/1000: loss 2.3000, accuracy 0.1000",
      "  step 22/1000: loss 1.9000, accuracy 0.2500, 0.7 steps/s, 23m17s of training left"]


def test_a_message_after_an_unfinished_bar_starts_its_own_line(capsys):
  shown = progress.EpochProgress(steps_per_epoch=300, epochs=1, mode="bar")
  shown.start_epoch(0)
  shown.update(100, 0.6, 0.8, logged=True)
  shown.break_line()
  shown.break_line()  # Once only.
  out = capsys.readouterr().out
  assert out.endswith("accuracy: 0.8000\n"), repr(out[-60:])
  assert not out.endswith("\n\n")


def test_durations_read_as_a_person_says_them():
  assert [progress.duration(s) for s in (45, 725, 10920)] == ["45s", "12m05s", "3h02m"]
