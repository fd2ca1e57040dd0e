"""A run's folder: its layout, JSON files written atomically, and whether a run may start there.

  WORKDIR/
    events.out.tfevents.*   HParams entry, final metrics, config text (trainer.summaries)
    train/  eval/           TensorBoard scalars
    checkpoints/            model, optimizer and step (trainer.checkpointing)
    config.json             the settings a resume must match
    results.json            the record of a finished run (trainer.run_record)
    model.keras  saved_model/   the exports (trainer.export)

A workdir is never overwritten silently: one that holds something else, or a run with other
settings, is refused unless --overwrite.
"""

import json
import os
import shutil
from typing import Mapping, Optional

from trainer import errors

TRAIN_DIR = "train"
EVAL_DIR = "eval"
CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"

# Settings that change the math: a checkpoint resumes only under the same ones. Raising epochs
# does not change them, so it continues a run.
MATH_FIELDS = ("model", "api", "hidden_units", "dataset", "image_size", "validation_split",
               "image_shape", "num_classes", "batch_size", "learning_rate", "seed",
               "max_steps_per_epoch", "precision", "num_replicas")
# What a config.json written before a setting existed means by its absence.
_MATH_DEFAULTS = {"model": "mlp", "image_size": [], "image_shape": [], "num_classes": 0}


def write_json(path: str, values: Mapping[str, object], sort_keys: bool = True) -> None:
  """Writes `values` as JSON to `path` through a rename, so a reader never sees half a file."""
  with open(path + ".tmp", "w") as f:
    json.dump(dict(values), f, indent=2, sort_keys=sort_keys)
    f.write("\n")
  os.replace(path + ".tmp", path)


def read_json(path: str) -> Optional[dict]:
  """Returns the JSON object in `path`, or None if there is no such file."""
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


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


def check_can_start(workdir: str, run_config: Mapping[str, object], overwrite: bool) -> None:
  """Refuses a workdir that holds something other than this run, before anything loads."""
  if overwrite or not os.path.isdir(workdir) or not os.listdir(workdir):
    return
  saved = read_run_config(workdir)
  if saved is None:
    raise errors.UserError(
        f"--workdir={workdir} is not empty and holds no run of this trainer. Give a new "
        "--workdir, or add --overwrite to delete what is there.")
  check_same_math(saved, run_config, workdir)


def start_afresh(workdir: str, run_config: Mapping[str, object]) -> None:
  """Empties `workdir` (checked by check_can_start) and records the run's settings in it."""
  shutil.rmtree(workdir, ignore_errors=True)
  os.makedirs(workdir)
  write_json(os.path.join(workdir, CONFIG_FILE), run_config)
