"""TensorBoard output of a run: train/ and eval/ scalars, the HParams entry and a config text.

Layout under the workdir: train/ (per-log-window scalars), eval/ (per-epoch scalars) and the
workdir itself (HParams entry, final metrics, config text), which the HParams dashboard reads as
one session. A writer that is not the chief's writes nothing.

A resumed run retrains the steps after its checkpoint, some of which the killed run had already
logged: the writer reads what each folder holds and never writes a step twice, so TensorBoard
shows every step once, in order, across any number of kills.
"""

import glob
import json
import os
from typing import Dict, Mapping

import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from trainer import safe_files
from trainer.records import workdir as workdir_lib


class RunWriter:
  """Writes the TensorBoard events of one run, or nothing for a non-chief process."""

  def __init__(self, workdir: str, enabled: bool):
    self._enabled = enabled
    self._writers: Dict[str, tf.summary.SummaryWriter] = {}
    self._last_step: Dict[str, int] = {}
    self._folders: Dict[str, str] = {}
    if enabled:
      for name, folder in (("run", ""), ("train", workdir_lib.TRAIN_DIR),
                           ("eval", workdir_lib.EVAL_DIR)):
        path = os.path.join(workdir, folder)
        self._last_step[name] = last_logged_step(path)
        self._folders[name] = path
        with safe_files.writing("TensorBoard events", path):
          self._writers[name] = tf.summary.create_file_writer(path)

  def scalars(self, writer: str, step: int, values: Mapping[str, float]) -> None:
    """Writes `values` at `step` to the "train", "eval" or "run" events, unless already there.

    Flushed at once: a run killed later still has every step it logged.
    """
    if not self._enabled or step <= self._last_step[writer]:
      return
    with safe_files.writing("TensorBoard events", self._folders[writer]):
      with self._writers[writer].as_default(step=step):
        for name, value in values.items():
          tf.summary.scalar(name, value)
      self._writers[writer].flush()
    self._last_step[writer] = step

  def run_info(self, hparams: Mapping[str, object], trial_id: str,
               config: Mapping[str, object], environment: Mapping[str, object]) -> None:
    """Writes the HParams entry under `trial_id` and a text summary of the resolved config and
    environment.

    No experiment (hparams_config) is written: TensorBoard then derives the columns from the
    runs it finds, marks those that differ between them and shows those first, so the
    columns that tell runs apart are visible without ticking them. The trial id keeps runs
    with equal settings as rows of their own instead of one averaged row.
    """
    if not self._enabled:
      return
    with safe_files.writing("HParams entry", self._folders["run"]):
      with self._writers["run"].as_default(step=0):
        hparams_api.hparams(dict(hparams), trial_id=trial_id)
        tf.summary.text("config", _markdown_table(config))
        tf.summary.text("environment", _markdown_table(environment))
      self._writers["run"].flush()

  def close(self) -> None:
    for name, writer in self._writers.items():
      with safe_files.writing("TensorBoard events", self._folders[name]):
        writer.close()

  def __enter__(self) -> "RunWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def last_logged_step(folder: str) -> int:
  """Returns the highest step with a value in the event files of `folder` (-1 if none)."""
  last = -1
  for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
    try:
      # Read as TFRecords: tf.compat.v1.train.summary_iterator warns that it is deprecated.
      for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        if event.summary.value:
          last = max(last, event.step)
    except tf.errors.DataLossError:
      pass  # The last record was cut by a kill; the ones before it count.
  return last


def _markdown_table(values: Mapping[str, object]) -> str:
  rows = "\n".join(f"| {key} | `{json.dumps(value)}` |" for key, value in values.items())
  return "| name | value |\n|---|---|\n" + rows
