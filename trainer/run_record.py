"""results.json: the one-line-per-field record of a finished run; JSON files written atomically."""

import json
import os
from typing import Mapping

RESULTS_FILE = "results.json"

REQUIRED_FIELDS = (
    "api", "strategy", "num_replicas", "precision", "dataset", "epochs", "global_batch_size",
    "params", "test_accuracy", "test_loss", "examples_per_sec", "wall_time_s", "device",
    "tf_version", "keras_version")


def write_results(workdir: str, results: Mapping[str, object]) -> str:
  """Writes `results` to workdir/results.json through a rename, so a reader never sees half."""
  missing = [name for name in REQUIRED_FIELDS if name not in results]
  if missing:
    raise ValueError(f"results lack the fields {missing}")
  path = os.path.join(workdir, RESULTS_FILE)
  write_json(path, results)
  return path


def write_json(path: str, values: Mapping[str, object]) -> None:
  """Writes `values` as JSON to `path` through a rename, so a reader never sees half a file."""
  with open(path + ".tmp", "w") as f:
    json.dump(dict(values), f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(path + ".tmp", path)


def read_results(workdir: str) -> dict:
  """Returns the results.json of the run in `workdir`."""
  with open(os.path.join(workdir, RESULTS_FILE)) as f:
    return json.load(f)
