"""Where the training loop stops: how many steps each compiled call runs, and what falls at its end.

Pure Python, no TensorFlow, so every boundary rule is tested in milliseconds. Steps are global
(counted from the run's start), so a resumed run gets the same boundaries as an uninterrupted one.
A call ends at the first of: steps_per_loop steps, a log point, a checkpoint, an evaluation
(--eval_every), the epoch's end. Under --steps_per_loop=auto the step budget of a call comes from
the measured time of a step (`steps_for_seconds`), so a call lasts about AUTO_CALL_SECONDS on any
model and a stop request is acted on within seconds. Only where calls end depends on time; every
call is a whole number of packs and every boundary is still a step count, so the math (and a
resume) does not.
"""

import dataclasses
import math
import sys
from typing import Iterable, Optional, Sequence, Tuple

MAX_PACK = 25  # Steps per XLA call at most; see pack_size.
# How long an automatically sized call should last: long enough that Python's round trip between
# calls is noise (it is ~1 ms), short enough that Ctrl-C, SIGTERM and the progress line never
# wait long. A call of a slow model still runs at least one pack.
AUTO_CALL_SECONDS = 1.5
# The most bytes a CPU pack stacks: glibc serves an allocation above its mmap threshold (32 MiB
# at most) from fresh pages, which the copy into it then faults in one by one; below, a freed
# pack's memory is reused. See pack_limit.
CPU_PACK_BYTES = 16 * 2**20


def is_due(step: int, every: int) -> bool:
  """True when `step` is a multiple of `every`; an interval of 0 means never."""
  return every > 0 and step % every == 0


def steps_until_due(step: int, every: int) -> int:
  """Steps from `step` to the next multiple of `every`; an interval of 0 means never."""
  return every - step % every if every > 0 else sys.maxsize


def steps_for_seconds(seconds_per_step: Optional[float], pack: int, max_steps: int,
                      target_seconds: float = AUTO_CALL_SECONDS) -> int:
  """Steps for a call of about `target_seconds`: a multiple of `pack`, from `pack` to `max_steps`.

  `seconds_per_step` is the measured time of a step (None before any call was timed: then one
  pack, whose time is the measurement).
  """
  if seconds_per_step is None:
    return pack
  steps = int(target_seconds / max(seconds_per_step, 1e-9))
  return max(pack, min(max_steps, steps) // pack * pack)


def pack_size(max_pack: int, start_step: int, steps_per_epoch: int, log_every: int,
              checkpoint_every: int, profile_steps: Sequence[int] = (),
              eval_every: int = 0) -> int:
  """The largest K <= max_pack that divides every boundary and the start step.

  One compiled call can run K steps in an in-graph loop (a "pack") only if no boundary falls
  inside a pack; K dividing the epoch length, the log, checkpoint and evaluation intervals and the
  start step puts every boundary, and so every resume point, between packs. An epoch of prime
  length gets 1.
  """
  common = math.gcd(steps_per_epoch, log_every, checkpoint_every or steps_per_epoch,
                    eval_every or steps_per_epoch, start_step or steps_per_epoch,
                    *(profile_boundaries(profile_steps) or [steps_per_epoch]))
  return max(k for k in range(1, max_pack + 1) if common % k == 0)


def pack_limit(platform: str, has_convolutions: bool, batch_bytes: int) -> int:
  """The most steps one compiled call may scan over, from where it runs, what it computes and
  the bytes of the batch this process stacks for each step (`batch_bytes`).

  Packing speeds up the mlp's steps, but XLA's CPU convolutions inside a loop are many times
  slower and long to compile (docs/measurements.md, "JAX backend"). So convnets on CPUs take
  one step a call; everything else, and every model on accelerators, takes packs. On CPUs a pack
  also stays within CPU_PACK_BYTES: a larger stack is a fresh mapping each call, faulted in page
  by page, which cost the mlp more than its packs saved.
  """
  if platform == "cpu":
    if has_convolutions:
      return 1
    return max(1, min(MAX_PACK, CPU_PACK_BYTES // max(1, batch_bytes)))
  return MAX_PACK


def has_convolutions(layer_kinds: Iterable[str]) -> bool:
  """Whether a model of layers of these class names convolves (pack_limit's `has_convolutions`):
  by name, Keras's Conv1D/2D/3D, their transposes, depthwise and separable forms."""
  return any("Conv" in kind for kind in layer_kinds)


def profile_boundaries(profile_steps: Sequence[int]) -> list:
  """Where calls must end for a profile of steps A to B: after A-1 (unless 0) and after B."""
  if not profile_steps:
    return []
  first, last = profile_steps
  return [step for step in (first - 1, last) if step > 0]


@dataclasses.dataclass(frozen=True)
class Call:
  """One compiled call of the loop: its length, and the boundaries that fall at its end."""

  num_steps: int
  end_step: int
  log: bool  # Write the training scalars (every log_every steps, and at each epoch's end).
  checkpoint: bool  # A checkpoint inside the epoch; the epoch's end saves one anyway.
  epoch_end: bool  # The epoch's last step: evaluated (see `evaluate`) and saved.
  run_end: bool
  evaluate: bool = False  # Evaluate: at every epoch's end, and every eval_every steps.


@dataclasses.dataclass(frozen=True)
class LoopPlan:
  """The boundaries of one run, from its settings; `next_call` walks them."""

  steps_per_epoch: int
  epochs: int
  log_every: int
  checkpoint_every: int  # 0: only at epoch ends.
  steps_per_loop: int
  pack: int = 1  # Steps per XLA call; divides every boundary (see pack_size).
  profile_steps: Tuple[int, ...] = ()  # (A, B): calls end after steps A-1 and B.
  eval_every: int = 0  # 0: evaluations at epoch ends only.
  # Size calls by time (--steps_per_loop=auto): steps_per_loop is then the most a call runs.
  timed: bool = False

  def __post_init__(self):
    for name in ("steps_per_epoch", "epochs", "log_every", "steps_per_loop", "pack"):
      if getattr(self, name) < 1:
        raise ValueError(f"LoopPlan.{name} must be at least 1, got {getattr(self, name)}.")
    if self.steps_per_epoch % self.pack or self.log_every % self.pack or (
        self.checkpoint_every % self.pack) or self.eval_every % self.pack or any(
            step % self.pack for step in profile_boundaries(self.profile_steps)):
      raise ValueError(f"pack {self.pack} must divide the epoch, log, checkpoint and "
                       "evaluation intervals and the profile's boundaries.")

  @property
  def total_steps(self) -> int:
    return self.epochs * self.steps_per_epoch

  def epoch_of(self, step: int) -> int:
    """The 0-based epoch that the step after `step` belongs to."""
    return step // self.steps_per_epoch

  def evaluates_at(self, step: int) -> bool:
    """Whether an evaluation falls at the end of global step `step`."""
    return is_due(step, self.steps_per_epoch) or is_due(step, self.eval_every)

  def next_call(self, step: int, first: bool = False,
                seconds_per_step: Optional[float] = None) -> Call:
    """The call that starts after global step `step`.

    A process's first call runs one pack: it carries the tracing and compiling, which the
    throughput meter leaves out, so it should cost as few steps as possible. A timed plan sizes
    the others from `seconds_per_step`, the last timed call's (see steps_for_seconds).
    """
    if step >= self.total_steps:
      raise ValueError(f"step {step} is past the run's {self.total_steps} steps.")
    if step % self.pack:
      raise ValueError(f"step {step} falls inside a pack of {self.pack}.")
    if first:
      num_steps = self.pack
    else:
      budget = max(self.pack, self.steps_per_loop // self.pack * self.pack)
      if self.timed:
        budget = steps_for_seconds(seconds_per_step, self.pack, budget)
      num_steps = min(budget,
                      steps_until_due(step, self.steps_per_epoch),
                      steps_until_due(step, self.log_every),
                      steps_until_due(step, self.checkpoint_every),
                      steps_until_due(step, self.eval_every),
                      *(boundary - step for boundary in profile_boundaries(self.profile_steps)
                        if boundary > step))
    end = step + num_steps
    epoch_end = is_due(end, self.steps_per_epoch)
    return Call(num_steps=num_steps, end_step=end,
                log=epoch_end or is_due(end, self.log_every),
                checkpoint=not epoch_end and is_due(end, self.checkpoint_every),
                epoch_end=epoch_end, run_end=end >= self.total_steps,
                evaluate=epoch_end or is_due(end, self.eval_every))
