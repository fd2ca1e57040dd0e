"""Runs a matrix of trainer runs one after another, each in its own workdir under one root.

  python -m trainer.sweep --root=runs/sweep --seeds=3 -- --flagfile=configs/smoke.cfg \\
      --dataset=fashion_mnist --data_dir=/usr/share/datasets/fashion-mnist

The matrix is models x APIs x seeds x backends x strategies x precisions x batch sizes (your own
model's API is its own, so it runs once per seed and setting); flags after `--` go to every run.
--backends=tensorflow,jax trains each configuration on both Keras backends (jax: pip install -e
".[jax]"); trainer.compare then sets them side by side. Runs that finished are skipped and a run
that was stopped resumes from its checkpoint, so rerunning a stopped sweep continues where it
was. Each run is its own `python -m trainer.main` process, as a user would start it; its whole
output is kept in WORKDIR/trainer.log, and a failed run's own error line is shown. Exits
non-zero if any run failed.
"""

import itertools
import os
import re
import subprocess
import sys
import time
from typing import Dict, List, Sequence

from absl import flags

from trainer import command
from trainer import config as config_lib
from trainer import errors
from trainer.records import run_record
from trainer.records import workdir as workdir_lib

flags.DEFINE_string("root", "runs/sweep", "Folder that holds one workdir per run.")
flags.DEFINE_list("models", ["mlp"], "Models to compare: mlp, cnn, resnet18, resnet34, resnet50, "
                  "applications.NAME, or your own as path/to/file.py:function or "
                  "package.module:function.")
flags.DEFINE_list("apis", ["sequential", "functional", "subclass"],
                  "Keras APIs that build each built-in model.")
flags.DEFINE_integer("seeds", 3, "Seeds per configuration: 0, 1, ... seeds-1.", lower_bound=1)
# Unset lists are not varied: those flags come from the trainer flags after `--` (or presets).
flags.DEFINE_list("backends", [], "--backend values to compare: tensorflow, jax.")
flags.DEFINE_list("strategies", [], "--strategy values to compare.")
flags.DEFINE_list("precisions", [], "--precision values to compare.")
flags.DEFINE_list("batch_sizes", [], "--batch_size values to compare.")

for _name, _choices in (("apis", config_lib.APIS), ("backends", config_lib.BACKENDS),
                        ("strategies", config_lib.STRATEGIES),
                        ("precisions", config_lib.PRECISIONS)):
  flags.register_validator(
      _name, lambda values, choices=_choices: set(values) <= set(choices),
      message=f"--{_name} takes a comma-separated list of: {', '.join(_choices)}")
flags.register_validator(
    "models", lambda values: all(value in config_lib.NETWORKS
                                 or config_lib.brings_its_own_api(value)
                                 for value in values),
    message=f"--models takes a comma-separated list of {', '.join(config_lib.NETWORKS)}, "
            f"{config_lib.APPLICATIONS_PREFIX}NAME or path/to/file.py:function")
flags.register_validator("batch_sizes", lambda values: all(v.isdigit() and int(v) > 0
                                                           for v in values),
                         message="--batch_sizes takes a comma-separated list of positive integers")

FLAGS = flags.FLAGS

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_name(settings: Dict[str, str]) -> str:
  """Returns the workdir name of one run, e.g. functional-s0, cnn-subclass-mirrored-b64-s1 or
  nets.build-s0 for --model=path/to/nets.py:build."""
  model = config_lib.short_model_name(settings.get("model", "mlp"))
  parts = [model if model != "mlp" else None, settings.get("api"), settings.get("backend"),
           settings.get("strategy"),
           settings.get("precision"),
           settings.get("batch_size") and f"b{settings['batch_size']}", f"s{settings['seed']}"]
  return "-".join(part for part in parts if part)


def matrix(apis: Sequence[str], seeds: int, strategies: Sequence[str] = (),
           precisions: Sequence[str] = (), batch_sizes: Sequence[str] = (),
           models: Sequence[str] = ("mlp",), backends: Sequence[str] = ()
           ) -> List[Dict[str, str]]:
  """Returns the settings of every run, seeds innermost so each configuration fills in early.

  An empty list leaves that flag out of the runs' settings; so does the default model, mlp.
  """
  varied = {"backend": backends, "strategy": strategies, "precision": precisions,
            "batch_size": batch_sizes}
  names = [name for name, values in varied.items() if values]
  # Your own model's API, and a Keras Application's, is its own.
  model_apis = [(model, api) for model in models
                for api in ([None] if config_lib.brings_its_own_api(model) else apis)]
  runs = []
  for combination in itertools.product(*(varied[name] for name in names), model_apis,
                                       range(seeds)):
    *values, (model, api), seed = combination
    run = {**dict(zip(names, map(str, values))), "model": model, "api": api, "seed": str(seed)}
    runs.append({name: value for name, value in run.items()
                 if value is not None and (name, value) != ("model", "mlp")})
  return runs


def run_sweep(root: str, runs: List[Dict[str, str]], trainer_flags: Sequence[str]) -> int:
  """Runs what is not finished yet; returns the number of failed runs."""
  os.makedirs(root, exist_ok=True)
  failures = 0
  for number, settings in enumerate(runs, 1):
    workdir = os.path.join(root, run_name(settings))
    prefix = f"[{number}/{len(runs)}] {run_name(settings)}"
    if run_record.has_results(workdir):
      print(f"{prefix}: finished before, skipped", flush=True)
      continue
    command = [sys.executable, "-m", "trainer.main", *trainer_flags,
               *(f"--{name}={value}" for name, value in settings.items()),
               f"--workdir={os.path.abspath(workdir)}"]
    start = time.monotonic()
    process = subprocess.run(command, cwd=ROOT_DIR, capture_output=True, text=True)
    seconds = time.monotonic() - start
    log = _keep_log(workdir, command, process)
    if process.returncode:
      failures += 1
      print(f"{prefix}: FAILED with exit code {process.returncode} "
            f"({errors.describe_exit_code(process.returncode)}) after {seconds:.0f} s: "
            f"{failure_message(process.stderr)} (whole log: {log})", flush=True)
      continue
    results = run_record.read_results(workdir)
    print(f"{prefix}: test accuracy {results['test_accuracy']:.4f}, "
          f"{results['examples_per_sec']:,.0f} examples/s, {seconds:.0f} s", flush=True)
  return failures


def _keep_log(workdir: str, command: Sequence[str], process) -> str:
  """Appends this attempt's command and whole output to the run's log; returns its path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, workdir_lib.LOG_FILE)
  with open(path, "a") as f:
    f.write(f"$ {' '.join(command)}\n{process.stdout}{process.stderr}"
            f"[exit code {process.returncode}]\n\n")
  return path


def failure_message(stderr: str) -> str:
  """The line of a failed run's stderr that says what went wrong.

  The trainer's own "error: ..." line when there is one; else the exception line that ends a
  traceback; else the last line. TensorFlow's log lines after it do not hide it.
  """
  lines = [line for line in stderr.strip().splitlines() if line.strip()]
  for line in reversed(lines):
    if line.startswith("error:"):
      return line[len("error:"):].strip()
  for line in reversed(lines):
    if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b", line):
      return line
  return lines[-1] if lines else "(no output)"


def main(argv):
  trainer_flags = argv[1:]
  runs = matrix(FLAGS.apis, FLAGS.seeds, FLAGS.strategies, FLAGS.precisions, FLAGS.batch_sizes,
                FLAGS.models, FLAGS.backends)
  print(f"Sweep of {errors.plural(len(runs), 'run')} under {FLAGS.root}", flush=True)
  failures = run_sweep(FLAGS.root, runs, trainer_flags)
  if failures:
    print(f"{failures} of {errors.plural(len(runs), 'run')} failed; rerun the same command to "
          f"retry {'it' if failures == 1 else 'them'}.",
          file=sys.stderr)
    sys.exit(1)
  print(f"Done. Compare them with: python -m trainer.compare --logdir={FLAGS.root}")


if __name__ == "__main__":
  command.run(main)
