"""The console filter drops TensorFlow's chatter and nothing else; a real run shows no noise."""

import os
import subprocess
import sys

import pytest

from tests.processes import ROOT
from trainer import console

NOISE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1795605620.640623   19224 cudart_stub.cc:31] Could not find cuda drivers on "
    b"your machine, GPU will not be used.",
    b"E0000 00:00:1795605622.908351   19224 cuda_platform.cc:52] failed call to cuInit: "
    b"INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    b"TensorFlow with the appropriate compiler flags.",
    b"W0000 00:00:1795605622.908351   19224 some_file.cc:52] a warning",
]
REAL = [
    b"E0000 00:00:1795605622.908351   19224 collective_ops.cc:52] Collective op failed",
    b"F0000 00:00:1795605622.908351   19224 check.cc:12] Check failed: x == y",
    b"Traceback (most recent call last):",
    b"error: something the harness says",
]


def test_the_filter_keeps_errors_and_drops_chatter():
  for line in NOISE:
    assert not console.keep_line(line, min_level=2, has_gpu=False), line
  for line in REAL:
    assert console.keep_line(line, min_level=2, has_gpu=False), line
  # With a GPU, a failed cuInit is a real error; with TF_CPP_MIN_LOG_LEVEL=0, everything shows.
  assert console.keep_line(NOISE[2], min_level=2, has_gpu=True)
  assert all(console.keep_line(line, min_level=0, has_gpu=False) for line in NOISE)


@pytest.mark.slow
def test_a_process_shows_cpp_errors_and_python_errors_but_not_chatter():
  script = (
      "import os, sys\n"
      "from trainer import console\n"
      "console.quiet()\n"
      "import tensorflow as tf\n"  # Its start-up lines go through the filter.
      "os.write(2, b'E0000 00:00:1.2   7 ops.cc:1] a real C++ error\\n')\n"
      "os.write(2, b'I0000 00:00:1.2   7 ops.cc:1] chatter\\n')\n"
      "from absl import logging\n"
      "logging.warning('absl still logs')\n"
      "raise ValueError('a real Python error')\n")
  result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"}, timeout=120)
  err = result.stderr.decode()
  assert result.returncode == 1
  assert "a real C++ error" in err and "ValueError: a real Python error" in err
  assert "absl still logs" in err
  for word in ("chatter", "cuInit", "cuda", "oneDNN", "InitializeLog", "rebuild TensorFlow"):
    assert word not in err, err


@pytest.mark.slow
def test_compare_is_as_quiet_as_the_trainer(finished_runs, tmp_path):
  config, _ = finished_runs["functional"]
  compared = subprocess.run(
      [sys.executable, "-m", "trainer.compare",
       f"--logdir={os.path.dirname(config.output.workdir)}",
       f"--output_dir={tmp_path / 'report'}"], cwd=ROOT, capture_output=True, text=True,
      timeout=240)
  assert compared.returncode == 0, compared.stderr
  assert "cuInit" not in compared.stderr and "E0000" not in compared.stderr, compared.stderr
  assert compared.stdout.startswith("3 runs in ")


@pytest.mark.slow
def test_a_resume_reads_the_last_step_its_run_logged(finished_runs):
  # Read quietly: a resumed run's output shows no warning (test_multi_worker.py checks it).
  from trainer.records import summaries  # pylint: disable=g-import-not-at-top
  config, _ = finished_runs["functional"]
  assert summaries.last_logged_step(os.path.join(config.output.workdir, "train")) == 200
