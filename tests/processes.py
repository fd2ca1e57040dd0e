"""The project's commands run as users run them: in a real process, from the repository root."""

import os
import re
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command_line(settings: dict) -> list:
  """The trainer's flags that give the Config keywords `settings`, as a user types them."""
  flags = []
  for name, value in settings.items():
    if isinstance(value, bool):
      flags.append(f"--{'' if value else 'no'}{name}")
    elif isinstance(value, tuple):
      flags.append(f"--{name}={','.join(map(str, value))}")
    else:
      flags.append(f"--{name}={value}")
  return flags


def run_module(module: str, *flags: str, timeout: float = 240) -> subprocess.CompletedProcess:
  """Runs `python -m MODULE FLAGS` to the end; returns its exit code and output."""
  return subprocess.run([sys.executable, "-m", module, *flags], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def run_trainer(*flags: str, timeout: float = 240) -> subprocess.CompletedProcess:
  """Runs `python -m trainer.main FLAGS` to the end; returns its exit code and output."""
  return run_module("trainer.main", *flags, timeout=timeout)


def local_hosts(count: int) -> list:
  """`count` worker addresses on free ports of 127.0.0.1, as scripts/launch_local.py gives them."""
  return [f"127.0.0.1:{port}" for port in _launch_local().free_ports(count)]


def start_worker(hosts: list, index: int, *flags: str, module: str = "trainer.main",
                 temp_dir=None, wrapper: tuple = ()) -> subprocess.Popen:
  """Starts worker `index` of the cluster `hosts` as a real process (`python -m MODULE FLAGS`,
  under `wrapper`'s command if given: then in a process group of its own, which `kill`
  ends whole) with the environment the launcher gives it, its output in one pipe; `temp_dir`
  becomes its TMPDIR."""
  env = _launch_local().worker_environment(hosts, index)
  if temp_dir:
    env["TMPDIR"] = str(temp_dir)
  return subprocess.Popen([*wrapper, sys.executable, "-m", module, *flags], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=bool(wrapper))


def kill(process: subprocess.Popen) -> None:
  """SIGKILL to `process`, and to its process group if it leads one (a wrapped worker's), so
  the wrapper's child goes too. Nothing for one already waited for: its process id may be
  another's by now."""
  if process.poll() is not None:
    return
  try:
    os.killpg(process.pid, signal.SIGKILL)
  except ProcessLookupError:  # No group of its own, or nothing left of it.
    process.kill()
  process.wait()


def _launch_local():
  """scripts/launch_local.py, imported from its folder (scripts/ is not a package)."""
  if os.path.join(ROOT, "scripts") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
  import launch_local  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  return launch_local


# The line each worker of a cluster logs at its end: equal on every worker of a run in sync.
FINAL_LINE = re.compile(r"final train loss (\S+), weights sha256 (\w+)")
