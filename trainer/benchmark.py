"""Measures the harness against the plain Keras script and the machine's matmul ceiling.

  python -m trainer.benchmark --data_dir=/usr/share/datasets/fashion-mnist --output=benchmark.json
  python -m trainer.benchmark --tiny --output=/tmp/benchmark.json     # seconds, for CI

Rows, all on this machine and the same data (Fashion-MNIST IDX files, or --dataset):
  a  plain Keras: the blog post's compile() and fit(x, y, batch_size=32) on NumPy arrays
  b  the harness at batch 32 with default flags
  c  the harness at its best settings for the machine (--best_batch_size, precision, XLA)
  d  the ceiling: a plain matmul of the model's largest shape, in examples/sec at 6 x params
     FLOPs per example, per precision
  e  c on synthetic data (real vs synthetic = input pipeline overhead)
  f  b under one_device and under mirrored over one device (strategy wrapper cost)
Each figure is the median of the timed intervals (at least 6) with their min-max spread. The rows
are measured in interleaved rounds, each row a few intervals per round after its own warm-up
interval, so a machine whose speed drifts (shared VMs do) shifts every row alike. Harness
intervals are its TensorBoard log windows, so the figures match what runs report.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from trainer import run_record
from trainer import workdir as workdir_lib

flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist",
                    "MNIST-format IDX folder for the real-data rows.")
flags.DEFINE_enum("dataset", "fashion_mnist", ["mnist", "fashion_mnist"],
                  "Dataset name recorded for the real-data rows.")
flags.DEFINE_integer("best_batch_size", 4096, "Batch size of row c.", lower_bound=1)
flags.DEFINE_enum("best_precision", "auto", ["auto", "float32", "mixed_float16", "mixed_bfloat16"],
                  "Precision of row c; auto as in the trainer.")
flags.DEFINE_integer("rounds", 3, "Interleaved rounds over all rows.", lower_bound=1)
flags.DEFINE_integer("intervals", 3, "Timed intervals per row per round, after one warm-up.",
                     lower_bound=2)
flags.DEFINE_boolean("tiny", False, "A seconds-long run that checks the benchmark works: "
                     "a few small intervals, figures meaningless.")
flags.DEFINE_string("output", "benchmark.json", "Where to write the JSON results.")

FLAGS = flags.FLAGS

# Training FLOPs per example: forward + backward ~ 6 x the weights of the two Dense layers.
FLOPS_PER_EXAMPLE = 6 * (784 * 256 + 256 * 10)
# Dense peak FLOP/s by GPU name (vendor specs, without sparsity), for MFU against the spec.
GPU_PEAK_FLOPS = {
    "H100": {"float32": 67e12, "mixed_bfloat16": 989e12, "mixed_float16": 989e12},
    "A100": {"float32": 19.5e12, "mixed_bfloat16": 312e12, "mixed_float16": 312e12},
    "V100": {"float32": 15.7e12, "mixed_float16": 125e12},
    "L4": {"float32": 30.3e12, "mixed_bfloat16": 121e12, "mixed_float16": 121e12},
    "T4": {"float32": 8.1e12, "mixed_float16": 65e12},
}


def _summary(rates):
  """Median and spread of timed intervals."""
  return {"examples_per_sec": statistics.median(rates), "min": min(rates), "max": max(rates),
          "intervals": len(rates)}


def measure_plain_keras(images, labels, batch_size: int, interval_steps: int, intervals: int):
  """Row a: the blog post's script, timed every `interval_steps` batches by a callback.

  Returns (rates of `intervals` intervals after a warm-up one, row details).
  """
  import keras  # pylint: disable=g-import-not-at-top
  model = keras.Sequential([
      keras.Input(shape=(28, 28, 1)), keras.layers.Flatten(),
      keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10, activation="softmax")])
  model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

  class Timer(keras.callbacks.Callback):

    def __init__(self):
      super().__init__()
      self.times, self.batches = [], 0

    def on_train_batch_end(self, batch, logs=None):
      self.batches += 1
      if self.batches % interval_steps == 0:
        self.times.append(time.perf_counter())

  timer = Timer()
  steps_per_epoch = len(images) // batch_size
  epochs = -(-(intervals + 2) * interval_steps // steps_per_epoch)  # Warm-up + timed + margin.
  model.fit(images.astype("float32") / 255.0, labels, batch_size=batch_size, epochs=epochs,
            verbose=0, callbacks=[timer])
  rates = [interval_steps * batch_size / (end - start)
           for start, end in zip(timer.times, timer.times[1:])]
  return rates[1:intervals + 1], {"batch_size": batch_size}


def measure_harness(base_config, **changes):
  """A harness row: one run of train_and_evaluate; its log windows after the first are the
  intervals. Returns (rates, row details)."""
  from trainer import train  # pylint: disable=g-import-not-at-top
  config = base_config.replace(**changes)
  results = train.train_and_evaluate(config)
  return results["examples_per_sec_windows"][1:], {
      "batch_size": config.batch_size, "strategy": results["strategy"],
      "precision": results["precision"], "jit_compile": results["jit_compile"],
      "steps_per_loop": results["steps_per_loop"], "dataset": config.dataset,
      "test_accuracy": results["test_accuracy"]}


def measure_matmul_ceiling(batch_size: int, precision: str, intervals: int, iterations: int):
  """Row d: FLOP/s of [batch, 784] x [784, 256], the model's largest matmul, under XLA."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dtype = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16,
           "mixed_float16": tf.float16}[precision]
  inputs = tf.cast(tf.random.uniform([batch_size, 784]), dtype)
  weights = tf.cast(tf.random.uniform([784, 256]), dtype)

  @tf.function(jit_compile=True)
  def matmul(inputs, weights):
    return tf.reduce_sum(tf.cast(tf.matmul(inputs, weights), tf.float32))

  @tf.function
  def repeat(count):
    total = tf.constant(0.0)
    for _ in tf.range(count):
      total += matmul(inputs, weights)
    return total

  repeat(tf.constant(2)).numpy()
  rates = []
  for _ in range(intervals):
    start = time.perf_counter()
    repeat(tf.constant(iterations)).numpy()
    # In examples/sec at FLOPS_PER_EXAMPLE, like the other rows.
    flops = iterations * 2 * batch_size * 784 * 256 / (time.perf_counter() - start)
    rates.append(flops / FLOPS_PER_EXAMPLE)
  return rates, {"batch_size": batch_size, "precision": precision}


def measure_startup(data_dir: str, workdir: str) -> float:
  """Seconds from process start to the first training step, in a fresh process."""
  subprocess.run([sys.executable, "-m", "trainer.main", "--dataset=fashion_mnist",
                  f"--data_dir={data_dir}", "--epochs=1", "--max_steps_per_epoch=1",
                  f"--workdir={workdir}"], check=True, capture_output=True,
                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return run_record.read_results(workdir)["time_to_first_step_s"]


def run_benchmark(data_dir: str, dataset: str, best_batch_size: int, best_precision: str,
                  rounds: int, intervals: int, tiny: bool, root: str) -> dict:
  """Runs every row and returns the benchmark record, targets included."""
  from trainer import hardware  # pylint: disable=g-import-not-at-top
  from trainer import idx_files  # pylint: disable=g-import-not-at-top
  from trainer import precision as precision_lib  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  images, labels, _, _ = idx_files.read_mnist_format(data_dir)
  if tiny:
    images, labels, best_batch_size = images[:4096], labels[:4096], 256
    rounds, intervals = 1, 5
  best_precision = precision_lib.resolve_precision(best_precision)[0]
  measures = _measures(images, labels, data_dir, dataset, best_batch_size, best_precision,
                       intervals, tiny, root)
  rates, details = {name: [] for name in measures}, {}
  for _ in range(rounds):  # Interleaved, so drift over minutes shifts every row alike.
    for name, measure in measures.items():
      measured, details[name] = measure()
      rates[name] += measured
  device = hardware.describe_devices()
  rows, ceilings = _rows(rates, details, device)
  startup = measure_startup(data_dir, os.path.join(root, "startup"))
  ratios, targets = _ratios_and_targets(rows, ceilings, startup)
  return {
      "date": time.strftime("%Y-%m-%d"), "device": device, "tiny": tiny,
      "tf_version": tf.__version__, "keras_version": keras.__version__,
      "flops_per_example": FLOPS_PER_EXAMPLE, "rows": rows, "ceilings": ceilings,
      "ratios": ratios, "time_to_first_step_s": startup, "targets_met": targets,
  }


def _measures(images, labels, data_dir: str, dataset: str, best_batch_size: int,
              best_precision: str, intervals: int, tiny: bool, root: str) -> dict:
  """Each row's measuring function, by row name; each returns (rates, row details)."""
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  # Steps per interval: about a second of training each on a 2-core CPU; tiny runs are seconds.
  small_interval = 20 if tiny else 400
  best_interval = max(1, (2 if tiny else 40) * 4096 // best_batch_size)
  runs = iter(range(1000))

  def harness(batch_size, interval, **changes):
    # The first (tracing) loop may fill a window; then a warm-up window and the timed ones.
    # Tiny runs cut one epoch to exactly that; full runs train whole epochs, enough of them.
    steps = (intervals + 2) * interval
    config = config_lib.Config(
        dataset=dataset, data_dir=data_dir, batch_size=batch_size, log_every=interval,
        epochs=1 if tiny else -(-steps // (len(images) // batch_size)),
        max_steps_per_epoch=steps if tiny else 0, workdir=os.path.join(root, f"run{next(runs)}"))
    return measure_harness(config, **changes)

  ceiling_precisions = ["float32"] + ([best_precision] if best_precision != "float32" else [])
  iterations = 5 if tiny else 100
  return {
      "a_plain_keras": lambda: measure_plain_keras(images, labels, 32, small_interval,
                                                   intervals),
      "b_harness_defaults": lambda: harness(32, small_interval),
      "c_harness_best": lambda: harness(best_batch_size, best_interval,
                                        precision=best_precision, jit_compile=True),
      **{f"d_ceiling_{precision}": lambda p=precision: measure_matmul_ceiling(
          best_batch_size, p, intervals, iterations) for precision in ceiling_precisions},
      "e_harness_best_synthetic": lambda: harness(best_batch_size, best_interval,
                                                  dataset="synthetic", precision=best_precision,
                                                  jit_compile=True),
      "f_one_device": lambda: harness(32, small_interval, strategy="one_device"),
      "f_mirrored_one_device": lambda: harness(32, small_interval, strategy="mirrored"),
  }


def _rows(rates: dict, details: dict, device: str):
  """Returns (rows of the table, with MFU; the ceiling row of each precision)."""
  rows, ceilings = {}, {}
  for name in rates:
    row = {**_summary(rates[name]), **details[name]}
    if name.startswith("d_ceiling_"):
      row["flops_per_sec"] = row["examples_per_sec"] * FLOPS_PER_EXAMPLE
      ceilings[row["precision"]] = row
      if row["precision"] != "float32":
        continue  # Used for the MFU of that precision's rows; the table's row d is float32.
      name = "d_ceiling"
    rows[name] = row
  peak = next((spec for name, spec in GPU_PEAK_FLOPS.items() if name in device), None)
  for name, row in rows.items():
    if name == "d_ceiling":
      continue
    model_flops = row["examples_per_sec"] * FLOPS_PER_EXAMPLE
    ceiling = ceilings.get(row.get("precision", "float32"), ceilings["float32"])
    row["mfu_vs_ceiling"] = model_flops / ceiling["flops_per_sec"]
    if peak and row.get("precision", "float32") in peak:
      row["mfu_vs_peak_spec"] = model_flops / peak[row.get("precision", "float32")]
  return rows, ceilings


def _ratios_and_targets(rows: dict, ceilings: dict, startup: float):
  """Returns (the ratios between rows, whether each target is met)."""
  rate = {name: row["examples_per_sec"] for name, row in rows.items()}
  ratios = {
      "b_over_a": rate["b_harness_defaults"] / rate["a_plain_keras"],
      "c_over_d": rate["c_harness_best"] / ceilings.get(
          rows["c_harness_best"]["precision"], ceilings["float32"])["examples_per_sec"],
      "real_over_synthetic": rate["c_harness_best"] / rate["e_harness_best_synthetic"],
      "one_device_over_default": rate["f_one_device"] / rate["b_harness_defaults"],
      "mirrored_one_device_over_default": (rate["f_mirrored_one_device"]
                                           / rate["b_harness_defaults"]),
  }
  targets = {
      "b_over_a >= 4.0": ratios["b_over_a"] >= 4.0,
      "c_over_d >= 0.8": ratios["c_over_d"] >= 0.8,
      "real_over_synthetic >= 0.95": ratios["real_over_synthetic"] >= 0.95,
      "one_device_over_default >= 0.9": ratios["one_device_over_default"] >= 0.9,
      "mirrored_one_device_over_default >= 0.9": ratios["mirrored_one_device_over_default"] >= 0.9,
      "time_to_first_step_s <= 8": startup <= 8.0,
  }
  return ratios, targets


def format_table(record: dict) -> str:
  """Returns the record as a Markdown table."""
  lines = ["| row | batch | precision | examples/s (median) | min-max | MFU vs ceiling |",
           "|---|---|---|---|---|---|"]
  for name, row in record["rows"].items():
    mfu = f"{row['mfu_vs_ceiling']:.0%}" if "mfu_vs_ceiling" in row else "-"
    lines.append(f"| {name} | {row['batch_size']} | {row.get('precision', 'float32')} | "
                 f"{row['examples_per_sec']:,.0f} | {row['min']:,.0f}-{row['max']:,.0f} | {mfu} |")
  lines.append("")
  lines += [f"- {name}: {value:.2f}" for name, value in record["ratios"].items()]
  lines.append(f"- time to first step: {record['time_to_first_step_s']:.1f} s")
  lines += [f"- target {name}: {'met' if met else 'NOT met'}"
            for name, met in record["targets_met"].items()]
  return "\n".join(lines)


def main(argv):
  del argv  # Unused.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  with tempfile.TemporaryDirectory(prefix="benchmark-") as root:
    record = run_benchmark(FLAGS.data_dir, FLAGS.dataset, FLAGS.best_batch_size,
                           FLAGS.best_precision, FLAGS.rounds, FLAGS.intervals, FLAGS.tiny, root)
  workdir_lib.write_json(FLAGS.output, record, sort_keys=False)  # Rows stay in table order.
  print(f"\nBenchmark on {record['device']}, {record['date']} (TF {record['tf_version']}):")
  print(format_table(record))
  print(f"\nWritten to {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
