"""How a command ends: as sys.exit would, but without destroying what the process still holds."""

import pathlib
import subprocess
import sys
import textwrap

from tests import processes

# A command's last moments: output still buffered for a pipe, an exit handler, a thread that
# is still writing, and an object whose destruction hangs (as a tf.data iterator's can, waiting
# for its autotuning thread) held by a module until Python's shutdown.
_COMMAND = textwrap.dedent("""
    import atexit, sys, threading, time
    from trainer import command

    class HangsWhenDestroyed:
      def __del__(self):
        time.sleep(60)

    HELD = HangsWhenDestroyed()
    print("buffered for the pipe")
    atexit.register(lambda: print("exit handler ran"))
    def write_last():
      time.sleep(0.3)
      print("thread finished")
    threading.Thread(target=write_last).start()
    command.exit_now({code})
""")


def _end(code: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", _COMMAND.format(code=code)], cwd=processes.ROOT,
                        capture_output=True, text=True, timeout=30)


def test_a_command_ends_with_its_output_threads_and_handlers_done_without_destroying_its_objects():
  ended = _end("3")
  assert ended.returncode == 3
  assert ended.stdout.splitlines() == ["buffered for the pipe", "thread finished",
                                       "exit handler ran"]


def test_exit_codes_are_those_of_sys_exit():
  assert _end("None").returncode == 0
  ended = _end("'error: a message'")
  assert (ended.returncode, ended.stderr) == (1, "error: a message\n")


def test_every_command_ends_this_way():
  # A command that ends through absl's app.run alone pays Python's shutdown, and may hang in it.
  for path in (pathlib.Path(processes.ROOT) / "trainer").rglob("*.py"):
    source = path.read_text()
    if 'if __name__ == "__main__":' in source and "flags" in source:
      assert "command.run(" in source and "app.run(" not in source, path
