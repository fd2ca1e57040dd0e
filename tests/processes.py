"""The project's commands run as users run them: in a real process, from the repository root."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module: str, *flags: str, timeout: float = 240) -> subprocess.CompletedProcess:
  """Runs `python -m MODULE FLAGS` to the end; returns its exit code and output."""
  return subprocess.run([sys.executable, "-m", module, *flags], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def run_trainer(*flags: str, timeout: float = 240) -> subprocess.CompletedProcess:
  """Runs `python -m trainer.main FLAGS` to the end; returns its exit code and output."""
  return run_module("trainer.main", *flags, timeout=timeout)
