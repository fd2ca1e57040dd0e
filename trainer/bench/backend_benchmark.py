"""The harness and Keras's fit on each Keras backend, for benchmark --quick's backend table.

  python -m trainer.bench.backend_benchmark --backend=jax --workloads=JSON --precisions=JSON \
      --output=FILE --run_logs=DIR [--window_seconds=S]

Keras keeps the backend of its first import, so every backend, TensorFlow too, is measured in a
process of its own: this module, started by `measure_backend`. Each workload runs at the one
explicit precision the table gives its row, under the default strategy (one device), on every
backend alike:
  harness   trainer.train.train_and_evaluate on that backend at that precision
  fit       Keras's fit of the same model and precision, with steps_per_execution as the
            harness's steps per call and XLA as the harness ran (always, on JAX): the tuned fit
            of that backend
and it writes {workload name: {"harness": {...}, "fit": {...}}} as JSON. With --window_seconds
(TensorFlow's process, which runs first) each workload's timed steps are sized from its own
ceiling at that precision (model_benchmark.timed_steps_for) and written beside its peers, so
the other backends time the same steps.
"""

import dataclasses
import json
import os
import subprocess
import sys
from typing import Dict, Mapping, Optional, Sequence

from absl import flags

from trainer import command
from trainer.bench import sub_run_log


def measure_backend(backend: str, workloads: Sequence["model_benchmark.Workload"],
                    precisions: Mapping[str, str], log_dir: str, output: str,
                    window_seconds: Optional[float] = None) -> Dict[str, dict]:
  """Runs this module for `backend` in a process of its own, each workload at
  precisions[workload.name]; returns its rows. It prints one line per workload; each run's
  output goes to log_dir/MODEL-BATCH-BACKEND.log, the process's own start-up chatter to
  log_dir/backend-BACKEND.log."""
  os.makedirs(log_dir, exist_ok=True)
  log_path = os.path.join(log_dir, f"backend-{backend}.log")
  command = [sys.executable, "-m", "trainer.bench.backend_benchmark", f"--backend={backend}",
             f"--workloads={json.dumps([dataclasses.asdict(w) for w in workloads])}",
             f"--precisions={json.dumps(dict(precisions))}", f"--output={output}",
             f"--run_logs={log_dir}", f"--window_seconds={window_seconds or 0}"]
  sys.stdout.flush()
  with open(log_path, "w") as log:
    done = subprocess.run(command, stderr=log, env={**os.environ, "KERAS_BACKEND": backend},
                          check=False)
  if done.returncode:
    raise RuntimeError(f"the {backend} backend's benchmark failed (exit {done.returncode}); "
                       f"its output is in {log_path}")
  with open(output) as f:
    return json.load(f)


def _measure(workload, backend: str, precision: str, root: str, seconds: dict) -> dict:
  from trainer.bench import model_benchmark  # pylint: disable=g-import-not-at-top
  from trainer.bench import timing  # pylint: disable=g-import-not-at-top
  with timing.spent(seconds, "harness"):
    harness = model_benchmark.measure_harness(
        workload, os.path.join(root, workload.model), backend=backend, precision=precision)
  with timing.spent(seconds, "fit"):
    fit = model_benchmark.measure_fit(workload, precision, harness["jit_compile"],
                                      workload.warmup_steps)
  return {"harness": harness, "fit": {**fit, "jit_compile": harness["jit_compile"]}}


def _sized(workload, precision: str, window_seconds: float):
  """`workload` with its timed steps sized from its own ceiling at `precision`."""
  from trainer.bench import model_benchmark  # pylint: disable=g-import-not-at-top
  ceiling = model_benchmark.measure_ceiling(workload, precision)
  return dataclasses.replace(workload, timed_steps=model_benchmark.timed_steps_for(
      workload, ceiling["examples_per_sec"], window_seconds))


def main(argv) -> None:
  del argv  # Unused.
  import tempfile  # pylint: disable=g-import-not-at-top
  from trainer.distribute import keras_backend  # pylint: disable=g-import-not-at-top
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  keras_backend.select(config_lib.RuntimeConfig(backend=FLAGS.backend))  # Before Keras loads.
  from trainer.bench import model_benchmark  # pylint: disable=g-import-not-at-top
  from trainer.bench import timing  # pylint: disable=g-import-not-at-top
  workloads = [model_benchmark.Workload(**{**w, "image_shape": tuple(w["image_shape"])})
               for w in json.loads(FLAGS.workloads)]
  precisions = json.loads(FLAGS.precisions)
  rows = {}
  with tempfile.TemporaryDirectory(prefix="backend-benchmark-") as root:
    for workload in workloads:
      precision = precisions[workload.name]
      log_name = f"{workload.name.replace('/', '-')}-{FLAGS.backend}.log"
      seconds = {}
      with sub_run_log.captured(os.path.join(FLAGS.run_logs, log_name)):
        if FLAGS.window_seconds:
          with timing.spent(seconds, "ceiling"):
            workload = _sized(workload, precision, FLAGS.window_seconds)
        rows[workload.name] = {**_measure(workload, FLAGS.backend, precision, root, seconds),
                               "timed_steps": workload.timed_steps, "seconds": seconds}
      print(f"  {workload.name} on {FLAGS.backend} ({precision}): harness "
            f"{rows[workload.name]['harness']['examples_per_sec']:,.1f}, fit "
            f"{rows[workload.name]['fit']['examples_per_sec']:,.1f} examples/s", flush=True)
  with open(FLAGS.output, "w") as f:
    json.dump(rows, f, indent=1)


FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_string("backend", "jax", "The Keras backend to measure.")
  flags.DEFINE_string("workloads", "[]", "The workloads, as JSON (model_benchmark.Workload).")
  flags.DEFINE_string("precisions", "{}", "Each workload's precision, as JSON by its name.")
  flags.DEFINE_string("output", "backend.json", "Where to write the rows as JSON.")
  flags.DEFINE_string("run_logs", "backend-logs", "Where each run's output goes.")
  flags.DEFINE_float("window_seconds", 0.0, "Size each workload's timed steps to last this long "
                     "at its own ceiling (TensorFlow only); 0: its own count.")
  command.run(main)
