"""A benchmark sub-run's output goes to its log file, none of it to the console."""

import os
import sys
import warnings

from absl import logging

from trainer.bench import sub_run_log


def test_everything_a_sub_run_prints_lands_in_its_log_and_not_on_the_console(tmp_path, capfd):
  path = tmp_path / "logs" / "cnn-harness.log"
  with sub_run_log.captured(str(path)):
    print("Epoch 1/1")
    # Keras's warnings (shuffle=True ...): warnings.showwarning writes to sys.stderr as it is then.
    sys.stderr.write(warnings.formatwarning("shuffle=True is ignored", UserWarning, "fit.py", 1))
    logging.get_absl_handler().python_handler.stream.write("absl says so\n")
    os.write(2, b"E0000 a C++ line\n")
    os.write(1, b"C++ stdout\n")
  print("after")
  console = capfd.readouterr()
  assert console.out == "after\n" and console.err == ""
  written = path.read_text()
  for line in ("Epoch 1/1", "shuffle=True is ignored", "absl says so",
               "E0000 a C++ line", "C++ stdout"):
    assert line in written, line
