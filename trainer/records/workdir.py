"""A run's folder: its layout, its config.json, and whether a run may start there.

  WORKDIR/
    events.out.tfevents.*   HParams entry, final metrics, config text (trainer.records.summaries)
    train/  eval/           TensorBoard scalars
    checkpoints/            model, optimizer and step (trainer.records.checkpointing)
    config.json             the settings a resume must match
    events.jsonl            what each process of the run did, and when (trainer.records.events)
    trainer.log             every attempt's output, when trainer.sweep ran it
    results.json            the record of a finished run (trainer.records.run_record)
    model.keras  saved_model/   the exports (trainer.records.export; no saved_model/ under
                                --noexport_saved_model)
    best/                   --keep_best: the best evaluation's exports and best.json
                            (trainer.records.best_model)

A workdir is never overwritten silently: one that holds something else, or a run with other
settings, is refused unless --overwrite.
"""

import json
import os
import shutil
from typing import Mapping, Optional

from trainer import errors
from trainer import safe_files

TRAIN_DIR = "train"
EVAL_DIR = "eval"
CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
KERAS_FILE = "model.keras"
LOCK_FILE = ".lock"  # trainer.records.workdir_lock's; never part of the run's content.
LOG_FILE = "trainer.log"  # trainer.sweep's record of each attempt; kept across them.
EVENTS_FILE = "events.jsonl"  # trainer.records.events's; a fresh start keeps it (start_afresh).
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


def read_run_config(workdir: str) -> Optional[dict]:
  """Returns the saved settings of the run in `workdir`, or None if it has none."""
  return safe_files.read_json(os.path.join(workdir, CONFIG_FILE))


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
    safe_files.write_json(os.path.join(workdir, CONFIG_FILE),
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


def start_afresh(workdir: str, run_config: Mapping[str, object], overwrite: bool) -> None:
  """Empties `workdir` (checked by check_can_start) and records the run's settings in it.

  The lock file stays (the run holds it, see trainer.records.workdir_lock), and so does a
  sweep's log. So does the event log unless `overwrite`: a run starts afresh at step 0 after a
  process killed before its first checkpoint, which was one of the run's processes, and its
  events are all that is left of it.
  """
  os.makedirs(workdir, exist_ok=True)
  kept = () if overwrite else (EVENTS_FILE,)
  for name in _contents(workdir):
    if name in kept:
      continue
    path = os.path.join(workdir, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
  safe_files.write_json(os.path.join(workdir, CONFIG_FILE), run_config)


def _contents(workdir: str) -> list:
  """What `workdir` holds besides the lock of the run that may hold it and the sweep's log."""
  return [name for name in os.listdir(workdir) if name not in (LOCK_FILE, LOG_FILE)]
