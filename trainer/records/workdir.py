"""A run's folder: its layout, JSON files written atomically, and whether a run may start there.

  WORKDIR/
    events.out.tfevents.*   HParams entry, final metrics, config text (trainer.records.summaries)
    train/  eval/           TensorBoard scalars
    checkpoints/            model, optimizer and step (trainer.records.checkpointing)
    config.json             the settings a resume must match
    trainer.log             every attempt's output, when trainer.sweep ran it
    results.json            the record of a finished run (trainer.records.run_record)
    model.keras  saved_model/   the exports (trainer.records.export)
    best/                   --keep_best: the best evaluation's exports and best.json
                            (trainer.records.best_model)

A workdir is never overwritten silently: one that holds something else, or a run with other
settings, is refused unless --overwrite.
"""

import contextlib
import errno
import glob
import json
import math
import os
import shutil
from typing import Iterator, Mapping, Optional, Sequence

from trainer import errors

TRAIN_DIR = "train"
EVAL_DIR = "eval"
CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
KERAS_FILE = "model.keras"
LOCK_FILE = ".lock"  # trainer.records.workdir_lock's; never part of the run's content.
LOG_FILE = "trainer.log"  # trainer.sweep's record of each attempt; kept across them.
SAVED_MODEL_DIR = "saved_model"
BEST_DIR = "best"

# Settings that change the math: a checkpoint resumes only under the same ones. Raising epochs
# does not change them, so it continues a run.
MATH_FIELDS = ("backend", "model", "api", "hidden_units", "sync_batchnorm", "dataset", "label_offset",
               "image_size", "augment", "eval_crop", "normalize", "validation_split",
               "image_shape", "num_classes", "batch_size", "optimizer", "momentum", "nesterov",
               "weight_decay", "learning_rate", "lr_scaling", "warmup_steps", "warmup_epochs",
               "lr_schedule", "lr_drops", "label_smoothing", "clip_norm", "grad_accum_steps",
               "ema_decay", "keep_best", "seed",
               "max_steps_per_epoch", "precision", "num_replicas")
# What a config.json written before a setting existed means by its absence.
_MATH_DEFAULTS = {"backend": "tensorflow", "model": "mlp", "sync_batchnorm": False, "label_offset": 0, "augment": "none",
                  "eval_crop": 0.875,
                  "normalize": False, "image_size": [], "image_shape": [],
                  "num_classes": 0, "lr_schedule": "constant", "optimizer": "adam",
                  "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "lr_scaling": "none",
                  "warmup_steps": 0, "warmup_epochs": 0, "lr_drops": [], "label_smoothing": 0.0,
                  "clip_norm": 0.0, "grad_accum_steps": 1, "ema_decay": 0.0,
                  "keep_best": "none"}


def is_disk_full(error: BaseException) -> bool:
  """True for an error that says the disk has no space left, from Python or TensorFlow."""
  return (getattr(error, "errno", None) == errno.ENOSPC
          or "No space left on device" in str(error))


@contextlib.contextmanager
def writing(what: str, path: str, partial: Sequence[str] = ()) -> Iterator[None]:
  """Turns a full disk while writing `what` to `path` into a DiskFull that says so.

  `partial` names files or folders the failed write may have left half-written: they are
  removed, so the space they took comes back and nothing half-written looks like a result.
  """
  try:
    yield
  except KeyboardInterrupt:
    _remove(partial)  # Ctrl-C mid-write: nothing half-written stays to look like a result.
    raise
  except Exception as e:  # pylint: disable=broad-except  # OSError, or TensorFlow's own errors.
    if not is_disk_full(e):
      raise
    _remove(partial)
    raise errors.DiskFull(
        f"The disk is full: writing the {what} to {path} failed. Everything written before "
        "is intact (the last good checkpoint included): free some space and rerun the same "
        "command to resume.") from None


def _remove(patterns: Sequence[str]) -> None:
  for pattern in patterns:
    for name in glob.glob(pattern):
      shutil.rmtree(name, ignore_errors=True) if os.path.isdir(name) else os.remove(name)


def write_json(path: str, values: Mapping[str, object], sort_keys: bool = True) -> None:
  """Writes `values` as JSON to `path` through a rename, so a reader never sees half a file."""
  with writing(os.path.basename(path), path, partial=[path + ".tmp"]):
    with open(path + ".tmp", "w") as f:
      # Strict JSON: a figure that is not finite (a loss of a process that trained no step)
      # is null, never NaN, which other JSON readers refuse.
      json.dump(_finite(dict(values)), f, indent=2, sort_keys=sort_keys, allow_nan=False)
      f.write("\n")
    os.replace(path + ".tmp", path)


def _finite(value):
  """`value` with every NaN or infinite float, however deeply nested, made None."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {key: _finite(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_finite(item) for item in value]
  return value


def read_json(path: str) -> Optional[dict]:
  """Returns the JSON object in `path`, or None if there is no such file.

  A damaged file (cut short, edited by hand) is a UserError that names it.
  """
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      values = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise errors.UserError(
        f"{path} is damaged and cannot be read ({e}). Restore it from a backup, or add "
        "--overwrite to start the run in its folder afresh.") from None
  if not isinstance(values, dict):
    raise errors.UserError(f"{path} is damaged: it holds no JSON object. Restore it from a "
                           "backup, or add --overwrite to start the run in its folder afresh.")
  return values


def read_run_config(workdir: str) -> Optional[dict]:
  """Returns the saved settings of the run in `workdir`, or None if it has none."""
  return read_json(os.path.join(workdir, CONFIG_FILE))


def check_same_math(saved: Mapping[str, object], current: Mapping[str, object],
                    workdir: str) -> None:
  """Refuses to resume `saved` under `current` settings when they differ in MATH_FIELDS."""
  current = json.loads(json.dumps(dict(current)))  # Tuples as lists, as config.json holds them.
  saved = {**_MATH_DEFAULTS, **saved}
  differences = [f"  {name}: {saved.get(name)!r} in the saved run, {current.get(name)!r} now"
                 for name in MATH_FIELDS if saved.get(name) != current.get(name)]
  if differences:
    raise errors.UserError(
        f"--workdir={workdir} holds a run with different settings, so it cannot be resumed:\n"
        + "\n".join(differences)
        + "\nRerun with the saved settings, give a new --workdir, or add --overwrite to start "
          "this run afresh there.")


CHANGES_KEY = "changes"  # config.json: the settings a resume changed, at which step.


def record_changes(workdir: str, run_config: Mapping[str, object], step: int) -> list:
  """Writes the settings of a run resumed at `step` to config.json, and under "changes" what
  differs from the saved ones (only settings outside MATH_FIELDS can: check_same_math refused
  the rest). Returns the new changes as "name was -> now" strings."""
  saved = read_run_config(workdir) or {}
  current = json.loads(json.dumps(dict(run_config)))  # Tuples as lists, as config.json holds.
  changes = [{"step": step, "setting": name, "was": saved[name], "now": value}
             for name, value in current.items() if name in saved and saved[name] != value]
  if changes:
    write_json(os.path.join(workdir, CONFIG_FILE),
               {**current, CHANGES_KEY: saved.get(CHANGES_KEY, []) + changes})
  return [f"{change['setting']} {change['was']!r} -> {change['now']!r}" for change in changes]


def check_can_start(workdir: str, run_config: Mapping[str, object], overwrite: bool) -> None:
  """Refuses a workdir that holds something other than this run, before anything loads."""
  if overwrite or not os.path.isdir(workdir) or not _contents(workdir):
    return
  saved = read_run_config(workdir)
  if saved is None:
    raise errors.UserError(
        f"--workdir={workdir} is not empty and holds no run of this trainer. Give a new "
        "--workdir, or add --overwrite to delete what is there.")
  check_same_math(saved, run_config, workdir)


def start_afresh(workdir: str, run_config: Mapping[str, object]) -> None:
  """Empties `workdir` (checked by check_can_start) and records the run's settings in it.

  The lock file stays (the run holds it, see trainer.records.workdir_lock), and so does a
  sweep's log.
  """
  os.makedirs(workdir, exist_ok=True)
  for name in _contents(workdir):
    path = os.path.join(workdir, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
  write_json(os.path.join(workdir, CONFIG_FILE), run_config)


def _contents(workdir: str) -> list:
  """What `workdir` holds besides the lock of the run that may hold it and the sweep's log."""
  return [name for name in os.listdir(workdir) if name not in (LOCK_FILE, LOG_FILE)]
