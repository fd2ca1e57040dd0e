"""Every failure a user can meet, its exit code, and how the entry points show it.

Library code raises a `UserError` (or a subclass) for anything the user can fix or must know;
the entry points (trainer.main, evaluate, compare) print its message alone, without a
traceback, and exit with its code. Any other exception is a bug and keeps its traceback.
"""

import contextlib
import functools
import re
import signal
import sys
from typing import Iterator, Optional, Sequence

FINISHED = 0
BUG_OR_USAGE = 1
BAD_INPUT = 2
PEER_LOST = 3
DIVERGED = 4
DISK_FULL = 5
WATCHDOG_KILLED = 128 + signal.SIGKILL

# The one table of exit codes; docs/troubleshooting.md's table says the same (a test checks).
EXIT_CODES = {
    FINISHED: "finished",
    BUG_OR_USAGE: "absl usage error (a bad flag value) or a bug (with traceback)",
    BAD_INPUT: "bad input: the message says what and how to fix it",
    PEER_LOST: "a peer worker died or became unreachable",
    DIVERGED: "the loss, or without loss scaling a gradient, became NaN or infinite (last good "
              "checkpoint kept)",
    DISK_FULL: "the disk filled up while writing: free space and rerun to resume",
    128 + signal.SIGINT: "stopped by Ctrl-C after saving: rerun to resume",
    128 + signal.SIGTERM: "stopped by SIGTERM after saving: rerun to resume",
    WATCHDOG_KILLED: "killed by the progress watchdog: a peer never started or hangs",
}


class UserError(Exception):
  """Bad input or an unusable environment: the message says what is wrong and what to do."""

  exit_code = BAD_INPUT


class ClusterError(UserError):
  """A peer worker is unreachable or has died."""

  exit_code = PEER_LOST


class Diverged(UserError):
  """The loss became NaN or infinite."""

  exit_code = DIVERGED


class DiskFull(UserError):
  """A write into the workdir found no space left; the last good checkpoint is intact."""

  exit_code = DISK_FULL


class Interrupted(UserError):
  """SIGTERM or SIGINT arrived; the run was saved and can resume. Exits 128 + the signal."""

  def __init__(self, message: str, signal_number: int):
    super().__init__(message)
    self.exit_code = 128 + signal_number


# TensorFlow's graph context in an op error: "{{function_node __wrapped__IteratorGetNext_...}}",
# "[[{{node DecodePng}}]]", "[Op:IteratorGetNext]", "name: ".
_FUNCTION_NODES = re.compile(r"\{\{function_node [^}]*\}\}|\[\[[^\]]*\]\]|\[Op:[^\]]*\]|"
                             r"\s*name: *$")


def tensorflow_cause(error: Exception) -> str:
  """What a TensorFlow op error says went wrong, without its graph's function and node names:
  the first line of its message, for a UserError to quote."""
  message = getattr(error, "message", None) or str(error)
  first = message.strip().splitlines()[0] if message.strip() else type(error).__name__
  return _FUNCTION_NODES.sub("", first).strip(" .;") or type(error).__name__


def summarized(names: Sequence[str], shown: int = 3) -> str:
  """A list for one line: the first `shown` names, then how many more ("a, b, c and 38 more")."""
  names = list(names)
  if len(names) <= shown + 1:
    return ", ".join(names)
  return f"{', '.join(names[:shown])} and {len(names) - shown} more"


def plural(count: int, noun: str, plural_noun: str = "") -> str:
  """"1 file", "2 files": a count with its noun."""
  return f"{count:,} {noun if count == 1 else plural_noun or noun + 's'}"


def describe_exit_code(code: int) -> str:
  """Returns what a trainer process's exit code means, e.g. for a sweep's report of a run."""
  if code in EXIT_CODES:
    return EXIT_CODES[code]
  if code < 0:  # How subprocess reports a death by signal.
    return f"killed by signal {signal.Signals(-code).name}"
  return "unknown exit code"


def is_out_of_memory(error: BaseException) -> bool:
  """Whether `error` is a framework running out of memory: Python's MemoryError, TensorFlow's
  ResourceExhaustedError, or JAX's XlaRuntimeError (JaxRuntimeError) of RESOURCE_EXHAUSTED.
  By class name, so this module imports neither framework."""
  kind = type(error).__name__
  if isinstance(error, MemoryError) or kind == "ResourceExhaustedError":
    return True
  return kind in ("XlaRuntimeError", "JaxRuntimeError") and "RESOURCE_EXHAUSTED" in str(error)


class Terminated(KeyboardInterrupt):
  """SIGTERM outside the training loop, raised where the process is, as Ctrl-C is."""

  signal_number = signal.SIGTERM


# The signal that interrupted the run outside the training loop, once one has. TensorFlow's
# own context managers can turn the KeyboardInterrupt raised inside them into another error
# (autograph's control-status stack fails an assert when a trace is interrupted), so what
# shown_as_one_line reports is decided by this, not by the exception's type.
_interrupting_signal = None
# Whether a shown_as_one_line block is open: outside one, nothing would act on a noted signal,
# and a stale one would turn a later run's first Ctrl-C into its second.
_noting = False


def note_interrupting_signal(signal_number: int) -> None:
  """Records that `signal_number` is ending the run (the handlers here, and a second Ctrl-C in
  the loop, call it before raising)."""
  global _interrupting_signal
  if _noting and _interrupting_signal is None:
    _interrupting_signal = signal_number


def interrupting_signal() -> Optional[int]:
  """The signal noted as ending the run, or None. Set also when its KeyboardInterrupt was
  raised inside a finalizer or a gc callback (JAX, once imported, registers one), where Python
  prints "Exception ignored" and goes on: the run must still stop."""
  return _interrupting_signal


def _raise_interrupted(signal_number, frame):
  del frame  # Unused.
  note_interrupting_signal(signal_number)
  raise Terminated() if signal_number == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def shown_as_one_line() -> Iterator[None]:
  """Prints a UserError raised inside as "error: ..." alone and exits with its code.

  Ctrl-C or SIGTERM outside the training loop (which saves first, see trainer.loop.preemption),
  during start-up or the export, ends the same way: one line, exit 130 or 143, whatever error
  the interrupted TensorFlow call turned it into. Every write goes through a rename or removes
  its half, so the workdir stays valid and a rerun resumes. A KeyboardInterrupt that Python
  swallows (raised inside a finalizer or a gc callback) is not printed: the signal was noted,
  and the loop or the end of this block stops the run.
  """
  global _interrupting_signal, _noting
  outer = _interrupting_signal, _noting
  _interrupting_signal, _noting = None, True  # A signal noted earlier in this process is not ours.
  previous = _handle_stop_signals(_raise_interrupted)
  previous_unraisable_hook = sys.unraisablehook
  sys.unraisablehook = functools.partial(_unless_interrupt, previous_unraisable_hook)
  try:
    yield
  except UserError as e:
    if _interrupting_signal is None or isinstance(e, Interrupted):
      print(f"error: {e}", file=sys.stderr, flush=True)
      _exit(e.exit_code)
    _exit_interrupted(_interrupting_signal)
  except KeyboardInterrupt as e:
    _exit_interrupted(_interrupting_signal or getattr(e, "signal_number", signal.SIGINT))
  except Exception:  # pylint: disable=broad-except
    if _interrupting_signal is None:
      raise
    _exit_interrupted(_interrupting_signal)
  else:
    if _interrupting_signal is not None:  # Its KeyboardInterrupt was swallowed on the way.
      _exit_interrupted(_interrupting_signal)
  finally:
    _restore_handlers(previous)
    sys.unraisablehook = previous_unraisable_hook
    _interrupting_signal, _noting = outer


def _handle_stop_signals(handler) -> dict:
  """Makes `handler` handle SIGTERM and SIGINT; returns the handlers it replaced."""
  return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore_handlers(previous: dict) -> None:
  for sig, handler in previous.items():
    signal.signal(sig, handler)


def _unless_interrupt(hook, unraisable) -> None:
  """Passes an exception Python cannot raise to `hook`, unless it is a KeyboardInterrupt: inside
  shown_as_one_line the handler noted its signal before raising, and its traceback would only
  clutter the one line the run ends with."""
  if not issubclass(unraisable.exc_type, KeyboardInterrupt):
    hook(unraisable)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
  """Holds SIGINT and SIGTERM until the block ends, then delivers the first to the handler
  outside it: for imports of native modules that crash when interrupted half-initialised."""
  arrived = []
  previous = _handle_stop_signals(lambda number, frame: arrived.append(number))
  try:
    yield
  finally:
    _restore_handlers(previous)
  if arrived:
    signal.raise_signal(arrived[0])


def _exit_interrupted(signal_number: int) -> None:
  cause = "Ctrl-C" if signal_number == signal.SIGINT else "SIGTERM"
  print(f"error: Stopped by {cause}; nothing half-written was kept. Rerun the same command "
        "to resume from the last checkpoint.", file=sys.stderr, flush=True)
  _exit(128 + signal_number)


def _exit(code: int) -> None:
  """sys.exit(code), also after a KeyboardInterrupt that ended code run from a string.

  CPython marks such an interrupt as unhandled even when it was caught (namedtuple and
  pybind11 modules run strings while TensorFlow loads), and `python -m` then ends by SIGINT
  instead of with `code`. Running a string resets the mark.
  """
  exec("pass")  # pylint: disable=exec-used
  sys.exit(code)
