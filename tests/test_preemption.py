"""Stop requests: the first SIGINT or SIGTERM waits for a boundary, a second Ctrl-C does not."""

import os
import signal

import pytest

from trainer.loop import preemption


def test_the_first_signal_is_recorded_and_a_second_ctrl_c_stops_at_once():
  with preemption.StopRequests() as stop:
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.signal_number == signal.SIGINT
    with pytest.raises(preemption.StopNow):
      os.kill(os.getpid(), signal.SIGINT)
      signal.sigtimedwait([], 0.1)  # Lets the handler run.


def test_a_second_ctrl_c_during_a_save_waits_for_its_end():
  saved = []
  with preemption.StopRequests() as stop:
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(preemption.StopNow):
      with stop.held():
        os.kill(os.getpid(), signal.SIGINT)
        saved.append("whole")
    assert saved == ["whole"]


def test_a_sigterm_after_ctrl_c_does_not_stop_at_once():
  with preemption.StopRequests() as stop:
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signal_number == signal.SIGINT
