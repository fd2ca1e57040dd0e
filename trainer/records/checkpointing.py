"""Checkpoints of a run: the model, the optimizer (with its loss-scale state) and the global step.

The data position needs nothing more: each epoch's order is a pure function of (seed, epoch), so
the step alone says which batch comes next. tf.train's writer renames files into place and
updates the `checkpoint` index last, so a crash mid-save leaves the previous checkpoint intact.
"""

import os
import shutil
import tempfile
from typing import Callable, Dict, List, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from trainer import errors
from trainer import safe_files
from trainer.records import workdir as workdir_lib


# Figures each process adds to the run's totals.
SUMMED = ("wall_time_s", "timed_examples", "timed_seconds", "input_wait_s")


class ArrayMirror(tf.Module):
  """Arrays that live outside TensorFlow (a JAX run's Keras variables, its moving average) held
  in tf.Variables for the checkpoint: the Checkpointer copies them in before each save and out
  after a restore, so both backends write the same kind of checkpoint, with its atomic index
  and its fallback to an older one."""

  def __init__(self, read: Callable[[], Sequence], write: Callable[[List], None]):
    super().__init__()
    self._read, self._write = read, write
    self.values = [tf.Variable(np.asarray(value), trainable=False) for value in read()]

  def copy_in(self) -> None:
    for variable, value in zip(self.values, self._read()):
      variable.assign(np.asarray(value))

  def copy_out(self) -> None:
    self._write([variable.numpy() for variable in self.values])


class Checkpointer:
  """Saves and restores one run's model, optimizer and step.

  Every worker of a multi-worker cluster must take part in each save; only the chief's lands in
  the workdir, the others write to a temporary folder that `close` removes. Create it under the
  strategy's scope: its step counter is a variable.
  """

  def __init__(self, workdir: str, is_chief: bool, max_to_keep: int,
               this_process: Callable[[], Dict[str, float]] = dict, **trackables):
    self._step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    # The run's totals so far, summed over the processes that trained it: each process adds
    # its own (from `this_process`: wall_time_s, timed_examples, timed_seconds, input_wait_s)
    # at every save, so a resumed run reports them whole, up to each earlier process's last
    # checkpoint. The time to the first step is the last training process's own.
    self._totals = {name: tf.Variable(0.0, dtype=tf.float64, trainable=False, name=name)
                    for name in SUMMED + ("time_to_first_step_s",)}
    self._processes = tf.Variable(0, dtype=tf.int64, trainable=False, name="processes")
    self._this_process = this_process
    self.earlier = {name: 0.0 for name in self._totals}
    self.earlier_processes = 0
    self._mirrors = [value for value in trackables.values() if isinstance(value, ArrayMirror)]
    self._checkpoint = tf.train.Checkpoint(step=self._step, processes=self._processes,
                                           **self._totals, **trackables)
    self._shared_dir = os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)
    self._scratch_dir = None if is_chief else tempfile.mkdtemp(prefix="trainer-worker-ckpt-")
    self._manager = tf.train.CheckpointManager(
        self._checkpoint, self._scratch_dir or self._shared_dir, max_to_keep=max_to_keep)

  def totals(self) -> Dict[str, float]:
    """The run's figures over every process so far, this one included."""
    current = self._this_process()
    totals = {name: self.earlier[name] + current.get(name, 0.0) for name in SUMMED}
    totals["time_to_first_step_s"] = (current.get("time_to_first_step_s")
                                      or self.earlier["time_to_first_step_s"] or None)
    totals["processes"] = self.earlier_processes + 1
    return totals

  @property
  def last_step(self) -> int:
    """The step of the last checkpoint saved or restored (0 before either)."""
    return int(self._step.numpy())

  def restore_latest(self) -> int:
    """Restores the newest readable checkpoint of the chief; returns its step (0 if none).

    An unreadable newest checkpoint (a crash mid-write, a damaged disk) is skipped with a
    warning for the one before it; if none can be read the run stops rather than start afresh.
    """
    state = tf.train.get_checkpoint_state(self._shared_dir)
    candidates = list(reversed(state.all_model_checkpoint_paths)) if state else []
    for path in candidates:
      try:
        self._checkpoint.restore(path).assert_existing_objects_matched()
      except Exception as e:  # pylint: disable=broad-except
        # A damaged file fails in many ways (DataLossError, IndexError, ...); each means the
        # same here: this checkpoint cannot be used, the one before it may be.
        logging.warning("Checkpoint %s cannot be read (%s: %s); trying the one before it.",
                        path, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        continue
      for mirror in self._mirrors:
        mirror.copy_out()
      if path != candidates[0]:
        logging.warning("Resumed from %s, an older checkpoint than the newest.", path)
      self.earlier = {name: float(variable.numpy()) for name, variable in self._totals.items()}
      self.earlier_processes = int(self._processes.numpy())
      return self.last_step
    if candidates:
      raise errors.UserError(
          f"None of the checkpoints in {self._shared_dir} can be read: "
          f"{', '.join(os.path.basename(p) for p in candidates)}. Add --overwrite to start the "
          "run afresh, or restore the folder from a backup.")
    return 0

  def save(self, step: int) -> None:
    """Saves the state at `step` (every worker must call this together)."""
    self._step.assign(step)
    for name, value in self.totals().items():
      if name != "processes":
        self._totals[name].assign(value or 0.0)
    self._processes.assign(self.earlier_processes + 1)
    for mirror in self._mirrors:
      mirror.copy_in()
    directory = self._manager.directory
    # TensorFlow writes each file under a temporary name and the index last, so a failed save
    # leaves the checkpoints before it readable, and only its own temporary files behind.
    with safe_files.writing(f"checkpoint of step {step}", directory,
                             partial=[os.path.join(directory, f"ckpt-{step}.*"),
                                      os.path.join(directory, "*_temp*")]):
      self._manager.save(checkpoint_number=step)

  def close(self) -> None:
    """Removes a non-chief worker's temporary checkpoints."""
    if self._scratch_dir:
      shutil.rmtree(self._scratch_dir, ignore_errors=True)
