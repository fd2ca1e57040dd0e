"""Files written safely, at the bottom of trainer/ (imports only errors): a full disk at any write
turned into DiskFull with the half-written file removed, JSON written through a rename (strict:
non-finite figures as null), and damaged JSON named. The workdir, the records, the TFRecord
converter and the benchmarks write through it.
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
