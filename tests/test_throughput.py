"""The throughput meter on a fake clock: warm-up left out, pauses left out, windows and totals."""

import pytest

from trainer.loop import throughput


class FakeClock:

  def __init__(self):
    self.now = 100.0

  def __call__(self) -> float:
    return self.now


def make_meter(batch=10):
  clock = FakeClock()
  return throughput.ThroughputMeter(batch, process_start_time=95.0, clock=clock,
                                    wall_clock=clock), clock


def test_the_first_call_is_warm_up_and_gives_the_time_to_first_step():
  meter, clock = make_meter()
  clock.now += 7.0  # Tracing and compiling.
  meter.record(25)
  assert meter.time_to_first_step_s == pytest.approx(12.0)  # From process start.
  assert meter.examples_per_sec == 0.0 and meter.end_window() == {}
  clock.now += 2.0
  meter.record(100)
  assert meter.examples_per_sec == pytest.approx(100 * 10 / 2.0)


def test_windows_report_their_own_rate_and_the_total_counts_them_all():
  meter, clock = make_meter()
  meter.record(1)
  for seconds in (1.0, 1.0):
    clock.now += seconds
    meter.record(50)
  first = meter.end_window()
  assert first == {"examples_per_sec": pytest.approx(500.0), "step_time_ms": pytest.approx(20.0),
                   "input_wait_share": 0.0}
  clock.now += 4.0
  meter.record(100)
  assert meter.end_window()["examples_per_sec"] == pytest.approx(250.0)
  assert meter.window_rates == [pytest.approx(500.0), pytest.approx(250.0)]
  assert meter.examples_per_sec == pytest.approx(2000 / 6.0)


def test_time_under_paused_counts_nowhere():
  meter, clock = make_meter()
  meter.record(1)
  clock.now += 1.0
  meter.record(10)
  with meter.paused():
    clock.now += 30.0  # Evaluation and the epoch-end checkpoint.
  clock.now += 1.0
  meter.record(10)
  assert meter.end_window()["examples_per_sec"] == pytest.approx(100.0)
  assert meter.examples_per_sec == pytest.approx(100.0)


def test_a_run_of_one_call_reports_its_rate_over_that_call_not_zero():
  now = [0.0]
  meter = throughput.ThroughputMeter(32, 0.0, clock=lambda: now[0], wall_clock=lambda: now[0])
  now[0] = 2.0
  meter.record(10)  # The only call: 10 steps, compiling included.
  assert meter.examples_per_sec == 0.0  # Nothing timed apart from compiling...
  assert meter.untimed_examples_per_sec() == 160.0  # ...so the rate over what it did: 320/2.


def test_the_wait_for_input_is_a_share_of_each_window_and_of_the_total():
  waited = [0.0]
  clock = FakeClock()
  meter = throughput.ThroughputMeter(10, process_start_time=95.0, clock=clock, wall_clock=clock,
                                     input_wait=lambda: waited[0])
  waited[0] += 5.0  # Waiting during the first, compiling, call counts nowhere.
  meter.record(1)
  for seconds, wait in ((2.0, 1.5), (2.0, 0.5)):
    clock.now += seconds
    waited[0] += wait
    meter.record(50)
  assert meter.end_window()["input_wait_share"] == pytest.approx(0.5)
  clock.now += 4.0
  meter.record(100)  # Nothing waited.
  assert meter.end_window()["input_wait_share"] == 0.0
  assert meter.totals()["input_wait_s"] == pytest.approx(2.0)


@pytest.mark.parametrize("share, said", [(0.05, False), (0.1, False), (0.35, True)])
def test_a_run_that_waited_for_input_says_so_and_what_helps(share, said):
  advice = throughput.input_bound_advice(share)
  assert (advice is not None) == said
  if said:
    assert "35%" in advice and "cores" in advice and "--data_service" in advice


def test_a_run_fed_by_the_service_is_told_to_add_workers_not_to_use_it():
  advice = throughput.input_bound_advice(0.35, data_service="10.0.0.5:5050")
  assert "More workers for the tf.data service at 10.0.0.5:5050" in advice
  assert "--data_service" not in advice
