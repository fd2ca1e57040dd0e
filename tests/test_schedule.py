"""The loop plan: where compiled calls end and which boundaries fall there (pure, milliseconds)."""

import pytest

from trainer.loop import schedule


def walk(plan: schedule.LoopPlan, start_step: int = 0) -> list:
  """Every call of a process that starts at `start_step` and runs to the end."""
  calls, step = [], start_step
  while step < plan.total_steps:
    calls.append(plan.next_call(step, first=step == start_step))
    step = calls[-1].end_step
  return calls


def ends(calls, boundary: str) -> list:
  return [call.end_step for call in calls if getattr(call, boundary)]


def test_zero_means_never_in_one_place():
  assert schedule.is_due(200, 100) and not schedule.is_due(150, 100)
  assert not schedule.is_due(100, 0)
  assert schedule.steps_until_due(130, 100) == 70 and schedule.steps_until_due(200, 100) == 100
  assert schedule.steps_until_due(130, 0) > 10**12


def test_first_call_is_one_pack_then_steps_per_loop():
  plan = schedule.LoopPlan(steps_per_epoch=1875, epochs=1, log_every=100, checkpoint_every=1000,
                           steps_per_loop=100, pack=25)
  sizes = [call.num_steps for call in walk(plan)]
  assert sizes[:3] == [25, 75, 100] and sum(sizes) == 1875
  assert all(size % 25 == 0 for size in sizes)


def test_steps_per_loop_that_does_not_divide_the_epoch_stops_at_its_end():
  plan = schedule.LoopPlan(steps_per_epoch=250, epochs=2, log_every=1000, checkpoint_every=0,
                           steps_per_loop=100)
  calls = walk(plan)
  assert [call.num_steps for call in calls] == [1, 100, 100, 49, 100, 100, 50]
  assert ends(calls, "epoch_end") == [250, 500]
  assert ends(calls, "log") == [250, 500]  # Every epoch's end logs, log_every or not.


def test_checkpoint_every_zero_saves_only_at_epoch_ends():
  plan = schedule.LoopPlan(steps_per_epoch=300, epochs=3, log_every=50, checkpoint_every=0,
                           steps_per_loop=100)
  calls = walk(plan)
  assert ends(calls, "checkpoint") == []
  assert ends(calls, "epoch_end") == [300, 600, 900]


def test_checkpoints_inside_epochs_leave_the_epoch_end_to_the_epoch():
  plan = schedule.LoopPlan(steps_per_epoch=300, epochs=2, log_every=50, checkpoint_every=100,
                           steps_per_loop=1000)
  calls = walk(plan)
  assert ends(calls, "checkpoint") == [100, 200, 400, 500]
  assert ends(calls, "log") == list(range(50, 601, 50))
  assert ends(calls, "run_end") == [600]


def test_a_short_epoch_from_max_steps_per_epoch_still_logs_and_evaluates_at_its_end():
  plan = schedule.LoopPlan(steps_per_epoch=7, epochs=3, log_every=100, checkpoint_every=1000,
                           steps_per_loop=100)
  calls = walk(plan)
  assert ends(calls, "log") == ends(calls, "epoch_end") == [7, 14, 21]


def test_eval_every_evaluates_inside_epochs_and_at_every_epoch_end():
  plan = schedule.LoopPlan(steps_per_epoch=10, epochs=2, log_every=100, checkpoint_every=0,
                           steps_per_loop=100, eval_every=4)
  calls = walk(plan)
  assert ends(calls, "evaluate") == [4, 8, 10, 12, 16, 20]
  assert ends(calls, "epoch_end") == [10, 20]
  assert schedule.pack_size(25, 0, 1000, 100, 1000, eval_every=30) == 10


def test_resume_mid_epoch_meets_the_same_boundaries_as_an_uninterrupted_run():
  plan = schedule.LoopPlan(steps_per_epoch=300, epochs=3, log_every=50, checkpoint_every=70,
                           steps_per_loop=100, pack=10)
  straight = walk(plan)
  resumed = walk(plan, start_step=130)
  for boundary in ("log", "checkpoint", "epoch_end", "run_end"):
    assert ends(resumed, boundary) == [s for s in ends(straight, boundary) if s > 130], boundary
  assert resumed[0].num_steps == 10  # The first call of the process is one pack.


def test_the_last_call_ends_exactly_at_the_run_end():
  plan = schedule.LoopPlan(steps_per_epoch=90, epochs=2, log_every=20, checkpoint_every=0,
                           steps_per_loop=7)
  calls = walk(plan)
  assert calls[-1].end_step == 180 and calls[-1].run_end and calls[-1].epoch_end
  assert not any(call.run_end for call in calls[:-1])
  with pytest.raises(ValueError, match="past the run"):
    plan.next_call(180)


def test_pack_size_divides_every_boundary_and_the_start():
  assert schedule.pack_size(25, 0, 1875, 100, 1000) == 25
  assert schedule.pack_size(25, 0, 937, 100, 1000) == 1  # An epoch of prime length.
  assert schedule.pack_size(25, 130, 300, 50, 70) == 10
  assert schedule.pack_size(25, 0, 300, 100, 0) == 25  # 0: epoch ends only.
  assert schedule.pack_size(1, 0, 1875, 100, 1000) == 1  # Several replicas: no packs.


def test_jax_packs_on_cpus_stay_within_the_bytes_the_allocator_reuses():
  mnist_batch = 4 * 28 * 28  # float32 bytes of one example.
  assert schedule.pack_limit("cpu", False, 128 * mnist_batch) == schedule.MAX_PACK
  assert schedule.pack_limit("cpu", False, 1024 * mnist_batch) == 5  # 16 MB, not 80.
  assert schedule.pack_limit("cpu", False, 8192 * mnist_batch) == 1
  assert schedule.pack_limit("cpu", True, 128 * mnist_batch) == 1  # XLA's CPU convolutions.
  assert schedule.pack_limit("gpu", False, 1024 * mnist_batch) == schedule.MAX_PACK


def test_a_pack_that_would_cut_a_boundary_is_refused():
  with pytest.raises(ValueError, match="must divide"):
    schedule.LoopPlan(steps_per_epoch=300, epochs=1, log_every=50, checkpoint_every=70,
                      steps_per_loop=100, pack=25)
  plan = schedule.LoopPlan(steps_per_epoch=300, epochs=1, log_every=50, checkpoint_every=0,
                           steps_per_loop=100, pack=25)
  with pytest.raises(ValueError, match="inside a pack"):
    plan.next_call(30)


def test_a_profile_window_gets_calls_of_exactly_its_steps():
  plan = schedule.LoopPlan(steps_per_epoch=300, epochs=1, log_every=100, checkpoint_every=0,
                           steps_per_loop=100, pack=10, profile_steps=(121, 140))
  assert [call.end_step for call in walk(plan)][:5] == [10, 100, 120, 140, 200]
  assert schedule.pack_size(25, 0, 300, 100, 0, (121, 140)) == 20
  assert schedule.pack_size(25, 0, 300, 100, 0, (1, 7)) == 1  # From the start: 0 is no bound.
  with pytest.raises(ValueError, match="profile"):
    schedule.LoopPlan(steps_per_epoch=300, epochs=1, log_every=100, checkpoint_every=0,
                      steps_per_loop=100, pack=25, profile_steps=(121, 140))


def test_calls_sized_by_time_last_about_the_target_in_whole_packs():
  # Before any call was timed: one pack, whose time is the measurement.
  assert schedule.steps_for_seconds(None, pack=25, max_steps=100) == 25
  # resnet18-like: 0.4 s a step gives 3 steps of 1.2 s; 2 s a step still runs one step.
  assert schedule.steps_for_seconds(0.4, pack=1, max_steps=100, target_seconds=1.5) == 3
  assert schedule.steps_for_seconds(2.0, pack=1, max_steps=100) == 1
  # The mlp: 1 ms a step would want 1,500; the most a call runs is the cap, in whole packs.
  assert schedule.steps_for_seconds(0.001, pack=25, max_steps=100) == 100
  assert schedule.steps_for_seconds(0.02, pack=25, max_steps=100, target_seconds=1.5) == 75
  assert schedule.steps_for_seconds(1.0, pack=25, max_steps=100) == 25


def test_a_timed_plan_keeps_every_boundary_whatever_the_step_time():
  plan = schedule.LoopPlan(steps_per_epoch=300, epochs=2, log_every=50, checkpoint_every=100,
                           steps_per_loop=100, pack=10, eval_every=150, timed=True)
  fixed = schedule.LoopPlan(steps_per_epoch=300, epochs=2, log_every=50, checkpoint_every=100,
                            steps_per_loop=100, pack=10, eval_every=150)
  for seconds_per_step in (None, 0.0001, 0.05, 0.3, 5.0):
    calls, step = [], 0
    while step < plan.total_steps:
      calls.append(plan.next_call(step, first=not calls, seconds_per_step=seconds_per_step))
      step = calls[-1].end_step
    assert all(call.num_steps % 10 == 0 for call in calls)
    assert all(call.num_steps * (seconds_per_step or 0) <= max(schedule.AUTO_CALL_SECONDS,
                                                               10 * (seconds_per_step or 0))
               for call in calls[1:])
    for boundary in ("log", "checkpoint", "epoch_end", "evaluate", "run_end"):
      assert ends(calls, boundary) == ends(walk(fixed), boundary), (seconds_per_step, boundary)
