"""One writer per workdir: an exclusive lock that a run holds on its workdir for its whole life.

The lock is `flock` on WORKDIR/.lock, which the kernel releases when the holding process ends in
any way (exit, crash, kill -9), so a dead run never blocks its rerun. The file names the holder
(host, pid, start time) for the message a second trainer shows. On a local disk this is exact.
On NFS, Linux turns flock into NFS byte-range locks: they hold across clients while the server's
lock manager runs (NFSv4 always; NFSv3 needs lockd), and a lock of a client that vanished is
freed when its lease expires (NFSv4: 90 s by default).

Taking the lock is also where an unusable workdir is found: one that cannot be created, is a
file, is not writable or sits on a read-only filesystem, each before any data loads.
"""

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from typing import Iterator

from trainer import errors
from trainer.records import workdir as workdir_lib

LOCK_FILE = workdir_lib.LOCK_FILE


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
  """Holds `workdir`'s lock while inside; raises UserError if another process holds it.

  A workdir this made and that holds nothing but the lock when the run ends (it stopped on bad
  input before writing anything) is removed again.
  """
  created = _make(workdir)
  path = os.path.join(workdir, LOCK_FILE)
  try:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise errors.UserError(_unwritable(workdir, e)) from None
  try:
    try:
      fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise errors.UserError(
          f"--workdir={workdir} is in use by {_holder(descriptor)}, which is training this run. "
          "Wait for it to finish or stop it (rerunning then resumes), or give another "
          "--workdir.") from None
    holder = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
      os.ftruncate(descriptor, 0)
      os.pwrite(descriptor, json.dumps(holder).encode(), 0)
    except OSError as e:
      raise errors.UserError(_unwritable(workdir, e)) from None
    yield
  finally:
    if created and os.listdir(workdir) == [LOCK_FILE]:
      os.remove(path)
      os.rmdir(workdir)
    os.close(descriptor)  # Releases the lock.


def _make(workdir: str) -> bool:
  """Creates `workdir` if it does not exist; returns whether it did."""
  if os.path.isdir(workdir):
    return False
  if os.path.exists(workdir):
    raise errors.UserError(f"--workdir={workdir} is a file, not a folder. Give a folder's path.")
  try:
    os.makedirs(workdir)
  except OSError as e:
    raise errors.UserError(
        f"--workdir={workdir} cannot be created: {e.strerror}. Give a folder on a writable "
        "disk.") from None
  return True


def _unwritable(workdir: str, error: OSError) -> str:
  if error.errno == errno.ENOSPC:
    return f"--workdir={workdir}: the disk is full. Free some space, or give another --workdir."
  return (f"--workdir={workdir} is not writable: {error.strerror}. Give a folder you can write "
          "to, on a disk that is not mounted read-only.")


def _holder(descriptor: int) -> str:
  """Who holds the lock, as the holder wrote it into the lock file."""
  try:
    holder = json.loads(os.pread(descriptor, 4096, 0) or b"{}")
    return f"process {holder['pid']} on {holder['host']} (started {holder['started']})"
  except (OSError, ValueError, KeyError):
    return "another process"
