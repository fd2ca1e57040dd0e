"""Measures the harness against the best peers on this machine, and the time to a good model.

  python -m trainer.benchmark --data_dir=/usr/share/datasets/fashion-mnist \
    --output=docs/benchmark.json --report=docs/benchmark.md

1. The machine: CPU model, vector extensions, TensorFlow's oneDNN setting, and a ceiling: the
   best fp32 matmul rate measured here (large square matmuls, and the blog model's own shapes,
   each with and without XLA).
2. FLOPs per example of the blog's model, read from the HLO of its XLA-compiled train step
   (trainer.bench.flops), so MFU = examples/s x FLOPs per example / ceiling.
3. Throughput of four peers training the same model on the same data, at each batch size, under
   the default strategy and under mirrored over 2 logical CPUs:
     plain_fit     the blog post's compile() and fit(x, y) on NumPy arrays
     tuned_fit     an expert's fit: jit_compile=True, steps_per_execution=100, a tf.data pipeline
     minimal_loop  tf.distribute's custom-loop tutorial: strategy.run in a tf.function, 100 steps
                   per call
     harness       trainer.train.train_and_evaluate with default flags
   Each measurement times `timed_steps` steps after `warmup_steps`; the peers run interleaved,
   `--repeats` rounds, so a machine whose speed drifts shifts every peer alike; each row gives
   min / median / max over the rounds.
4. Time to accuracy: the blog's whole script (scripts/blog_script.py) against
   `python -m trainer.main --flagfile=configs/fast.cfg` for seeds 0 and 1, each a fresh process,
   wall time from start to exit; fast.cfg's start-up phases from its results.json.
The targets are checked here, not in tests.
"""

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import flags

from trainer import command
from trainer import console
from trainer import safe_files
from trainer.bench import ceiling as ceiling_lib
from trainer.bench import input_benchmark
from trainer.bench import machine as machine_lib
from trainer.bench import timing
from trainer.loop import startup

_STARTED = time.perf_counter()  # Imported first thing by trainer.benchmark: the process's start.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = ("plain_fit", "tuned_fit", "minimal_loop", "harness")
STEPS_PER_CALL = 100  # tuned_fit's steps_per_execution, minimal_loop's steps per call.


# ---------------------------------------------------------------- The peers.
def blog_model():
  """The blog post's network, built the way its script builds it."""
  import keras  # pylint: disable=g-import-not-at-top
  return keras.Sequential([keras.Input(shape=(28, 28, 1)), keras.layers.Flatten(),
                           keras.layers.Dense(256, activation="relu"),
                           keras.layers.Dense(10, activation="softmax")])


class _StepTimer:
  """A Keras callback that notes when global step `warmup` and `warmup + timed` end."""

  def __init__(self, steps_per_epoch: int, warmup: int, timed: int):
    import keras  # pylint: disable=g-import-not-at-top

    timer = self

    class Callback(keras.callbacks.Callback):

      def on_epoch_begin(self, epoch, logs=None):
        timer.epoch = epoch

      def on_train_batch_end(self, batch, logs=None):
        step = timer.epoch * steps_per_epoch + batch + 1
        if timer.start is None and step >= warmup:
          timer.start, timer.start_step = time.perf_counter(), step
        elif timer.start is not None and timer.end is None and step >= warmup + timed:
          timer.end, timer.end_step = time.perf_counter(), step

    self.callback = Callback()
    self.epoch, self.start, self.end = 0, None, None
    self.start_step = self.end_step = 0

  def rate(self, batch_size: int) -> float:
    return (self.end_step - self.start_step) * batch_size / (self.end - self.start)


def _fit(data, strategy, batch_size: int, warmup: int, timed: int, tuned: bool) -> float:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.bench import model_benchmark  # pylint: disable=g-import-not-at-top
  images, labels = data
  # Where fit cannot compile (mirrored), the tuned fit keeps only its tf.data pipeline.
  compiled = tuned and model_benchmark.fit_can_compile(strategy)
  with strategy.scope():
    model = blog_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=compiled,
                  steps_per_execution=STEPS_PER_CALL if compiled else 1)
  if tuned:
    steps = warmup + timed
    dataset = (tf.data.Dataset.from_tensor_slices((images, labels)).cache()
               .shuffle(len(images)).batch(batch_size, drop_remainder=True).repeat()
               .prefetch(tf.data.AUTOTUNE))
    timer = _StepTimer(steps, warmup, timed)
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer.callback])
  else:
    steps_per_epoch = -(-len(images) // batch_size)
    timer = _StepTimer(steps_per_epoch, warmup, timed)
    model.fit(images, labels, batch_size=batch_size, verbose=0, callbacks=[timer.callback],
              epochs=-(-(warmup + timed + 1) // steps_per_epoch))
  return timer.rate(batch_size)


def measure_plain_fit(data, strategy, batch_size, warmup, timed) -> float:
  """The blog post's fit: NumPy arrays in, default compile."""
  return _fit(data, strategy, batch_size, warmup, timed, tuned=False)


def measure_tuned_fit(data, strategy, batch_size, warmup, timed) -> float:
  """An expert's fit: XLA, 100 steps per execution, a cached, prefetched tf.data pipeline."""
  return _fit(data, strategy, batch_size, warmup, timed, tuned=True)


def measure_minimal_loop(data, strategy, batch_size, warmup, timed) -> float:
  """tf.distribute's custom training loop tutorial, 100 steps per tf.function call."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images, labels = data
  with strategy.scope():
    model = blog_model()
    optimizer = keras.optimizers.Adam()
    # Built here: Keras 3 cannot create its slots inside the loop's tf.while under a strategy.
    optimizer.build(model.trainable_variables)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)
  dataset = (tf.data.Dataset.from_tensor_slices((images, labels)).cache()
             .shuffle(len(images)).batch(batch_size, drop_remainder=True).repeat()
             .prefetch(tf.data.AUTOTUNE))
  iterator = iter(strategy.experimental_distribute_dataset(dataset))

  def step(x, y):
    with tf.GradientTape() as tape:
      loss = tf.nn.compute_average_loss(loss_fn(y, model(x, training=True)),
                                        global_batch_size=batch_size)
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))

  @tf.function
  def train(iterator, steps):
    for _ in tf.range(steps):
      strategy.run(step, args=next(iterator))

  train(iterator, tf.constant(warmup))
  calls = max(1, timed // STEPS_PER_CALL)
  start = time.perf_counter()
  for _ in range(calls):
    train(iterator, tf.constant(STEPS_PER_CALL))
  tf.constant(0).numpy()  # Every step has run: the calls above return after their last op.
  return calls * STEPS_PER_CALL * batch_size / (time.perf_counter() - start)


def measure_harness(config_base, batch_size, warmup, timed, strategy_name, workdir,
                    train_examples) -> float:
  """The harness with default flags: examples_per_sec of its results (first call left out)."""
  from trainer import train  # pylint: disable=g-import-not-at-top
  steps_per_epoch = train_examples // batch_size
  steps = warmup + timed
  config = config_base.replace(
      batch_size=batch_size, strategy=strategy_name,
      cpu_devices=2 if strategy_name == "mirrored" else 1, workdir=workdir,
      epochs=-(-steps // steps_per_epoch), max_steps_per_epoch=min(steps, steps_per_epoch))
  return train.train_and_evaluate(config)["examples_per_sec"]


def throughput(data, data_dir: str, batch_sizes: Sequence[int], strategies: Sequence[str],
               repeats: int, tiny: bool, root: str) -> Dict[str, dict]:
  """Every peer x batch x strategy, interleaved over `repeats` rounds; rows keyed
  "strategy/batch/peer" with min / median / max examples/s."""
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  from trainer.distribute import distribution  # pylint: disable=g-import-not-at-top
  # Its runs are measured, not served: model.keras only.
  base = config_lib.Config.from_flags(dataset="fashion_mnist", data_dir=data_dir,
                                     log_every=STEPS_PER_CALL, checkpoint_every=0,
                                     export_saved_model=False)
  measures = {"plain_fit": measure_plain_fit, "tuned_fit": measure_tuned_fit,
              "minimal_loop": measure_minimal_loop}
  rates: Dict[str, List[float]] = {}
  runs = iter(range(10**6))
  for _ in range(repeats):
    for strategy_name in strategies:
      for batch_size in batch_sizes:
        warmup, timed = _steps(batch_size, tiny)
        for peer in PEERS:
          key = f"{strategy_name}/{batch_size}/{peer}"
          if peer == "harness":
            rate = measure_harness(base, batch_size, warmup, timed, strategy_name,
                                   os.path.join(root, f"run{next(runs)}"), len(data[0]))
          else:
            strategy = distribution.make_strategy(strategy_name)
            rate = measures[peer](data, strategy, batch_size, warmup, timed)
          rates.setdefault(key, []).append(rate)
          print(f"  {key}: {rate:,.0f} examples/s", flush=True)
  return {key: summary(values) for key, values in rates.items()}


def _steps(batch_size: int, tiny: bool):
  """(warm-up, timed) steps: whole 100-step calls, about 30,000 timed examples or more."""
  if tiny:
    return STEPS_PER_CALL, STEPS_PER_CALL
  timed = max(STEPS_PER_CALL, -(-30000 // batch_size) // STEPS_PER_CALL * STEPS_PER_CALL)
  # Two calls of warm-up; one is plenty where a call is 100,000 examples or more.
  return (2 if batch_size < 1000 else 1) * STEPS_PER_CALL, timed


def summary(values: Sequence[float]) -> dict:
  """min / median / max of repeated measurements."""
  return {"min": min(values), "median": statistics.median(values), "max": max(values),
          "n": len(values)}


# ---------------------------------------------------------------- Time to accuracy.
def _timed_process(command: List[str]) -> tuple:
  """(wall seconds, stdout) of a fresh process; its error if it fails."""
  start = time.perf_counter()
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if result.returncode:
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
  return seconds, result.stdout


def time_to_accuracy(data_dir: str, repeats: int, tiny: bool, root: str) -> dict:
  """The blog's whole script against fast.cfg (seeds 0 and 1), fresh processes, interleaved."""
  from trainer.records import run_record  # pylint: disable=g-import-not-at-top
  blog = [sys.executable, os.path.join("scripts", "blog_script.py"), f"--data_dir={data_dir}"]
  fast = [sys.executable, "-m", "trainer.main", "--flagfile=configs/fast.cfg",
          "--dataset=fashion_mnist", f"--data_dir={data_dir}"]
  if tiny:
    blog += ["--epochs=1", "--train_examples=2048"]
    fast += ["--epochs=1", "--max_steps_per_epoch=16"]
  runs = {"blog_script": [], "fast_seed0": [], "fast_seed1": []}
  from trainer.distribute import hardware  # pylint: disable=g-import-not-at-top
  if not hardware.gpus():
    # A machine's first run measures its CPU's ceiling for MFU (seconds): here, not in a timed
    # process. fast.cfg's mlp, under XLA, runs in float32.
    from trainer.records import mfu  # pylint: disable=g-import-not-at-top
    mfu.cpu_peak("float32")
  for round_index in range(repeats):
    seconds, stdout = _timed_process(blog)
    runs["blog_script"].append({"wall_s": seconds,
                                **json.loads(stdout.strip().splitlines()[-1])})
    for seed in (0, 1):
      workdir = os.path.join(root, f"fast{seed}-{round_index}")
      seconds, _ = _timed_process(fast + [f"--seed={seed}", f"--workdir={workdir}"])
      results = run_record.read_results(workdir)
      runs[f"fast_seed{seed}"].append({
          "wall_s": seconds, "test_accuracy": results["test_accuracy"],
          "time_to_first_step_s": results["time_to_first_step_s"],
          "startup_s": results["startup_s"]})
    print(f"  round {round_index + 1}: blog {runs['blog_script'][-1]['wall_s']:.1f} s, fast "
          f"{runs['fast_seed0'][-1]['wall_s']:.1f} / {runs['fast_seed1'][-1]['wall_s']:.1f} s",
          flush=True)
  record = {name: {"wall_s": summary([r["wall_s"] for r in values]),
                   "test_accuracy": summary([r["test_accuracy"] for r in values])}
            for name, values in runs.items()}
  record["fast_startup_s"] = {phase: statistics.median(
      r["startup_s"][phase] for name in ("fast_seed0", "fast_seed1") for r in runs[name])
      for phase in startup.PHASES}
  return record


# ---------------------------------------------------------------- Ratios and targets.
def ratios_and_targets(rows: Dict[str, dict], ceiling_flops: float, flops_per_example: float,
                       accuracy: dict) -> tuple:
  """(the ratios the targets read, each target met or not); medians throughout."""
  rate = {key: row["median"] for key, row in rows.items()}
  ratios, targets = {}, {}
  if "default/32/harness" in rate:
    ratios["harness_over_tuned_fit_b32"] = (rate["default/32/harness"]
                                            / rate["default/32/tuned_fit"])
    targets["harness >= 1.5x tuned_fit at batch 32"] = ratios["harness_over_tuned_fit_b32"] >= 1.5
  best = max((key for key in rate if key.endswith("/harness")), key=rate.get)
  ratios["best_harness"] = best
  ratios["best_harness_mfu"] = rate[best] * flops_per_example / ceiling_flops
  targets["best harness >= 85% of the fp32 ceiling"] = ratios["best_harness_mfu"] >= 0.85
  batches = sorted({int(key.split("/")[1]) for key in rate})
  for batch in batches:
    keys = [f"{s}/{batch}/{p}" for s in ("default", "mirrored") for p in ("harness",
                                                                            "minimal_loop")]
    if all(key in rate for key in keys):
      harness = rate[f"mirrored/{batch}/harness"] / rate[f"default/{batch}/harness"]
      minimal = rate[f"mirrored/{batch}/minimal_loop"] / rate[f"default/{batch}/minimal_loop"]
      ratios[f"mirrored_share_b{batch}"] = {"harness": harness, "minimal_loop": minimal}
      targets[f"mirrored x2 keeps >= minimal loop's share at batch {batch}"] = harness >= minimal
  if accuracy:
    blog = accuracy["blog_script"]["wall_s"]["median"]
    fast = max(accuracy[f"fast_seed{s}"]["wall_s"]["median"] for s in (0, 1))
    ratios["fast_speedup_over_blog"] = blog / fast
    targets["fast.cfg >= 0.88 for seeds 0 and 1"] = all(
        accuracy[f"fast_seed{s}"]["test_accuracy"]["min"] >= 0.88 for s in (0, 1))
    targets["fast.cfg >= 5x faster than the blog's script"] = ratios[
        "fast_speedup_over_blog"] >= 5
  return ratios, targets


def format_report(record: dict) -> str:
  """The record as Markdown: machine, ceiling, throughput table, time to accuracy, targets."""
  m, flops = record["machine"], record["flops_per_example"]
  ceiling = record["ceiling"]
  lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {' '.join(m['extensions']) or '-'}; "
           f"TF_ENABLE_ONEDNN_OPTS={m['tf_enable_onednn_opts']}; TF {record['tf_version']}, "
           f"Keras {record['keras_version']}; {record['date']}.",
           f"FLOPs per example (XLA HLO of the train step): {flops:,.0f}.",
           f"fp32 ceiling: {ceiling['flops_per_sec'] / 1e9:,.1f} GFLOP/s ({ceiling['best']}); "
           + ", ".join(f"{k} {v / 1e9:,.0f}" for k, v in ceiling["by_shape"].items()) + ".",
           "", "| strategy | batch | peer | examples/s median | min - max | MFU |",
           "|---|---|---|---|---|---|"]
  for key, row in record["throughput"].items():
    strategy, batch, peer = key.split("/")
    lines.append(f"| {strategy} | {batch} | {peer} | {row['median']:,.0f} | "
                 f"{row['min']:,.0f} - {row['max']:,.0f} | "
                 f"{row['median'] * flops / ceiling['flops_per_sec']:.0%} |")
  if record["time_to_accuracy"]:
    lines += ["", "| run | wall s median (min - max) | test accuracy (min - max) |",
              "|---|---|---|"]
    for name, row in record["time_to_accuracy"].items():
      if name == "fast_startup_s":
        continue
      w, a = row["wall_s"], row["test_accuracy"]
      lines.append(f"| {name} | {w['median']:.1f} ({w['min']:.1f} - {w['max']:.1f}) | "
                   f"{a['median']:.4f} ({a['min']:.4f} - {a['max']:.4f}) |")
    lines.append("\nfast.cfg start-up (median s): " + ", ".join(
        f"{k} {v:.2f}" for k, v in record["time_to_accuracy"]["fast_startup_s"].items()))
  if record.get("models"):
    lines += ["", "Each model kind at the precision and XLA setting the harness picks; the tuned "
              "fit is the better of XLA on and off (off for convnets on CPUs, and under "
              "mirrored, where Keras's fit cannot compile). Own ceiling: its matmuls and "
              "convolutions alone.", ""]
    lines += format_models(record)
  lines.append("")
  for name, value in record["ratios"].items():
    if isinstance(value, dict):
      value = ", ".join(f"{k} {v:.2f}" for k, v in value.items())
    elif isinstance(value, float):
      value = f"{value:.2f}"
    lines.append(f"- {name}: {value}")
  lines += [f"- target {name}: {'met' if met else 'NOT met'}"
            for name, met in record["targets_met"].items()]
  return "\n".join(lines)


def run_benchmark(data_dir: str, batch_sizes: Sequence[int], strategies: Sequence[str],
                  repeats: int, accuracy_repeats: int, tiny: bool, root: str) -> dict:
  """Runs every part and returns the benchmark record."""
  from trainer.distribute import hardware  # pylint: disable=g-import-not-at-top
  if "mirrored" in strategies:
    # Before TensorFlow starts; the default strategy uses the first device, with every core's
    # thread (so mirrored rows here run without the thread share a mirrored run gets).
    hardware.split_cpu(2, share_threads=False)
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.data import idx_files  # pylint: disable=g-import-not-at-top
  from trainer.bench import flops  # pylint: disable=g-import-not-at-top
  images, labels, _, _ = idx_files.read_mnist_format(data_dir)
  images = (images.astype("float32") / 255.0).reshape(-1, 28, 28, 1)
  if tiny:
    images, labels = images[:4096], labels[:4096]
  flops_per_example = flops.train_step_flops(blog_model(), False, (28, 28, 1), 32) / 32
  print(f"FLOPs per example: {flops_per_example:,.0f}", flush=True)
  ceiling = ceiling_lib.matmul_ceiling(tiny)
  print(f"fp32 ceiling: {ceiling['flops_per_sec'] / 1e9:,.1f} GFLOP/s", flush=True)
  rows = throughput((images, labels), data_dir, batch_sizes, strategies, repeats, tiny, root)
  accuracy = time_to_accuracy(data_dir, accuracy_repeats, tiny, root) if accuracy_repeats else {}
  ratios, targets = ratios_and_targets(rows, ceiling["flops_per_sec"], flops_per_example,
                                       accuracy)
  from trainer.bench import model_benchmark  # pylint: disable=g-import-not-at-top
  models = model_benchmark.run_workloads(
      model_benchmark.TINY_WORKLOADS if tiny else model_benchmark.QUICK_WORKLOADS, root,
      jit_both=True, strategies=strategies)
  for row in models.values():
    # The float32 big square is the ceiling measured here: it bounds float32 rows only.
    row["shares"] = model_benchmark.shares(
        row, ceiling["flops_per_sec"] if row["precision"] == "float32" else None)
  return {"date": time.strftime("%Y-%m-%d"), "machine": machine_lib.machine(), "tiny": tiny,
          "device": hardware.describe_devices(), "tf_version": tf.__version__,
          "keras_version": keras.__version__, "flops_per_example": flops_per_example,
          "ceiling": ceiling, "throughput": rows, "time_to_accuracy": accuracy,
          "models": models, "ratios": ratios, "targets_met": targets}


# ---------------------------------------------------------------- Any machine in 5 minutes.
def float32_math(capabilities: Sequence[tuple], tf32_enabled: bool) -> str:
  """What a float32 matmul runs in: "tf32" on GPUs of compute capability 8.0 and newer while
  TensorFlow allows TensorFloat-32 (its default), whose matmuls then round inputs to 10 bits of
  mantissa; "fp32" elsewhere."""
  if capabilities and min(tuple(c) for c in capabilities) >= (8, 0) and tf32_enabled:
    return "tf32"
  return "fp32"


def ceilings(tiny: bool, quick: bool) -> dict:
  """The big-square matmul ceilings: float32 (saying whether it ran as TF32), and the low
  precision the hardware has: bfloat16 where auto picks it (CPUs with bfloat16 instructions,
  GPUs from compute capability 8.0), float16 on older GPUs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.distribute import hardware  # pylint: disable=g-import-not-at-top
  from trainer.distribute import precision  # pylint: disable=g-import-not-at-top
  capabilities = hardware.gpu_compute_capabilities()
  found = {"float32": ceiling_lib.matmul_ceiling(tiny, "float32", quick)}
  found["float32"]["math"] = float32_math(
      capabilities, tf.config.experimental.tensor_float_32_execution_enabled())
  if capabilities:
    low = precision.gpu_precision(capabilities)[0].replace("mixed_", "")
  else:
    low = "bfloat16" if hardware.cpu_bfloat16() else "float32"
  if low != "float32":
    found[low] = ceiling_lib.matmul_ceiling(tiny, low, quick)
  return found


def run_quick(root: str, log_dir: Optional[str] = None) -> dict:
  """The machine, its ceilings, and every model_benchmark workload under the default strategy."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.bench import model_benchmark  # pylint: disable=g-import-not-at-top
  from trainer.distribute import hardware  # pylint: disable=g-import-not-at-top
  # The backend table first, each backend in a process of its own, while this process holds no
  # device memory: TensorFlow keeps a GPU's memory until its process ends.
  seconds = {}
  with timing.spent(seconds, "backends"):
    backends = measure_backends(log_dir or os.path.join(root, "logs"), root)
  with timing.spent(seconds, "ceilings"):
    found = ceilings(tiny=False, quick=True)
  if not hardware.gpus():
    # The same measurement a run's MFU takes on a CPU: kept where runs find it, so no timed
    # harness run below measures it again in its start-up.
    from trainer.records import mfu  # pylint: disable=g-import-not-at-top
    for dtype, ceiling in found.items():
      mfu.cpu_peak({"float32": "float32", "bfloat16": "mixed_bfloat16"}[dtype],
                   measure=lambda _, ceiling=ceiling: ceiling)
  print("ceilings: " + ", ".join(f"{dtype} {c['flops_per_sec'] / 1e9:,.0f} GFLOP/s"
                                 for dtype, c in found.items()), flush=True)
  # The strategy a user gets (mirrored over every GPU), each window lasting seconds.
  with timing.spent(seconds, "models"):
    rows = model_benchmark.run_workloads(model_benchmark.quick_workloads(), root,
                                         strategies=("auto",),
                                         window_seconds=model_benchmark.WINDOW_SECONDS,
                                         log_dir=log_dir)
  for row in rows.values():
    # The big square of the row's own precision; none where that was not measured.
    square = found.get(row["precision"].replace("mixed_", ""))
    row["shares"] = model_benchmark.shares(row, square and square["flops_per_sec"])
  return {"date": time.strftime("%Y-%m-%d"), "machine": machine_lib.machine(),
          "gpus": hardware.describe_gpus(), "device": hardware.describe_devices(),
          "tf_version": tf.__version__, "keras_version": keras.__version__,
          "ceilings": found, "models": rows, "backends": backends, "seconds": seconds}


# On CPUs the other backends time the mlp and the cnn only: XLA's CPU convolutions, which JAX
# uses, are far slower than TensorFlow's oneDNN ones, so a resnet there takes many minutes.
CPU_BACKEND_MODELS = ("mlp", "cnn")


def installed_backends() -> List[str]:
  """The Keras backends besides TensorFlow whose package is installed."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  return [name for name in config_lib.BACKENDS
          if name != "tensorflow" and importlib.util.find_spec(name) is not None]


def shared_precision(model: str, xla: bool, capabilities: Sequence[tuple],
                     cpu_bfloat16: Optional[str]) -> Tuple[str, str]:
  """The one explicit precision every backend runs a row of the backend table at, and why:
  what auto picks on both backends where they agree (GPUs, by compute capability), else
  float32, which both run (CPUs with bfloat16 instructions, where TensorFlow's auto takes
  mixed_bfloat16 for some models and JAX's float32). auto itself is not changed."""
  from trainer.distribute import precision  # pylint: disable=g-import-not-at-top
  if capabilities:
    return precision.gpu_precision(capabilities)[0], "auto's choice on both backends"
  tensorflows = precision.cpu_precision(cpu_bfloat16, model, xla)[0]
  jaxs = precision.JAX_CPU_PRECISION[0]
  if tensorflows == jaxs:
    return jaxs, "auto's choice on both backends"
  return "float32", (f"float32 runs on both, where auto takes {tensorflows} on tensorflow and "
                     f"{jaxs} on jax")


def measure_backends(log_dir: str, root: str) -> Dict[str, dict]:
  """The backend table's rows, {workload name: row}: each workload at one explicit precision
  (shared_precision) under the default strategy, the harness and the tuned fit on TensorFlow
  and on each other installed backend, each backend in a process of its own; none when no
  other backend is installed. TensorFlow's process sizes the timed windows, the others time
  the same steps."""
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  from trainer.bench import backend_benchmark  # pylint: disable=g-import-not-at-top
  from trainer.bench import model_benchmark  # pylint: disable=g-import-not-at-top
  from trainer.distribute import hardware  # pylint: disable=g-import-not-at-top
  others = installed_backends()
  if not others:
    return {}
  capabilities = hardware.gpu_compute_capabilities()  # Physical devices: no memory taken.
  workloads = [w for w in model_benchmark.QUICK_WORKLOADS
               if capabilities or w.model in CPU_BACKEND_MODELS]
  rows = {}
  for workload in workloads:
    xla = config_lib.compiles_with_xla(None, workload.model, workload.batch_size, 1)
    policy, reason = shared_precision(workload.model, xla, capabilities, hardware.cpu_bfloat16())
    rows[workload.name] = {"model": workload.model, "batch_size": workload.batch_size,
                           "precision": policy, "precision_reason": reason,
                           "strategy": "default", "peers": {}}
  precisions = {name: row["precision"] for name, row in rows.items()}

  def measure(backend: str, timed: list, window_seconds: Optional[float] = None) -> None:
    """Times the `timed` workloads on `backend`, in its own process, into the rows."""
    measured = backend_benchmark.measure_backend(
        backend, timed, precisions, log_dir, os.path.join(root, f"{backend}.json"),
        window_seconds=window_seconds)
    for name, peers in measured.items():
      rows[name]["timed_steps"] = peers.pop("timed_steps")
      rows[name].setdefault("seconds", {})[backend] = peers.pop("seconds")
      rows[name]["peers"][backend] = peers

  measure("tensorflow", workloads, window_seconds=model_benchmark.WINDOW_SECONDS)
  # The others time the steps TensorFlow's windows sized.
  sized = [dataclasses.replace(w, timed_steps=rows[w.name]["timed_steps"]) for w in workloads]
  for backend in others:
    measure(backend, sized)
  return rows


def format_backends(record: dict) -> List[str]:
  """The per-model table across Keras backends: the harness and the tuned fit on each, every
  backend of a row at the row's one precision and on one device."""
  rows = record.get("backends") or {}
  if not rows:
    return []
  others = sorted({b for row in rows.values() for b in row["peers"]} - {"tensorflow"})
  names = ["tensorflow", *others]
  lines = ["| model | batch | precision | " + " | ".join(f"{b} harness | {b} fit" for b in names)
           + " | " + " | ".join(f"{b} / tensorflow (harness)" for b in others) + " |",
           "|" + "---|" * (3 + 2 * len(names) + len(others))]
  for row in rows.values():
    rates = {b: {p: peers["examples_per_sec"] for p, peers in row["peers"][b].items()}
             for b in row["peers"]}
    cells = [f"{rates[b][p]:,.1f}" if b in rates else "-"
             for b in names for p in ("harness", "fit")]
    ratios = [f"{rates[b]['harness'] / rates['tensorflow']['harness']:.2f}x"
              if b in rates and "tensorflow" in rates else "-" for b in others]
    lines.append(f"| {row['model']} | {row['batch_size']} | {row['precision']} | "
                 + " | ".join(cells + ratios) + " |")
  lines.append("- Every backend of a row on one device (the default strategy), at the row's "
               "precision: " + "; ".join(f"{row['model']}: {row['precision_reason']}"
                                          for row in rows.values()) + ".")
  left_out = [row["model"] for name, row in record.get("models", {}).items() if name not in rows]
  if left_out:
    lines.append(f"- Not timed across backends on CPUs: {', '.join(left_out)} (XLA's CPU "
                 "convolutions, which JAX uses, are 10-100x slower than oneDNN's).")
  return lines


def format_models(record: dict) -> List[str]:
  """The per-model table: each peer's examples/s and seconds before the first step."""
  lines = ["| model | batch | precision | harness | tuned fit | fit defaults | own ceiling | "
           "harness / tuned | / defaults | of own ceiling | of big square | first step s "
           "(harness / tuned / defaults) |", "|" + "---|" * 12]
  for row in record["models"].values():
    peers, share = row["peers"], row["shares"]
    replicas = peers["harness"].get("replicas", 1)
    lines.append(
        f"| {row['model']} | {row['batch_size']} | {row['precision']}"
        f"{' XLA' if peers['harness']['jit_compile'] else ''}"
        + (f", {peers['harness']['strategy']} x{replicas}" if replicas > 1 else "") + " | "
        + " | ".join(f"{peers[p]['examples_per_sec']:,.1f}"
                     + (f" ({peers[p]['examples_per_sec'] / replicas:,.1f} each)"
                        if replicas > 1 else "")
                     for p in ("harness", "tuned_fit", "plain_fit"))
        + f" | {row['ceiling']['examples_per_sec']:,.1f} | {share['over_tuned_fit']:.2f}x | "
        f"{share['over_plain_fit']:.2f}x | {share['of_own_ceiling']:.0%} | "
        + (f"{share['of_big_square_ceiling']:.0%}" if "of_big_square_ceiling" in share else "-")
        + " | "
        + " / ".join(f"{peers[p]['first_step_s']:.1f}" for p in ("harness", "tuned_fit",
                                                                  "plain_fit")) + " |")
  for row in record["models"].values():
    if "peers_mirrored" in row:
      mirrored = row["peers_mirrored"]
      lines.append(f"- {row['model']} under mirrored x2: harness "
                   f"{mirrored['harness']['examples_per_sec']:,.1f}, tuned fit "
                   f"{mirrored['tuned_fit']['examples_per_sec']:,.1f}, fit defaults "
                   f"{mirrored['plain_fit']['examples_per_sec']:,.1f} examples/s; the harness "
                   f"keeps {row['shares']['mirrored_share']:.0%} of its default strategy's")
  return lines


def format_quick_report(record: dict) -> str:
  """The quick record as Markdown: machine, ceilings, one row per model."""
  m = record["machine"]
  gpus = "; ".join(f"{g['name']} (compute capability "
                   f"{'.'.join(map(str, g['compute_capability'])) or '?'}, "
                   + ("MIG slice)" if g.get("mig") else f"{g['memory_mib'] or '?'} MiB)")
                   for g in record["gpus"])
  lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {' '.join(m['extensions']) or '-'}"
           + (f"; {len(record['gpus'])} GPU: {gpus}" if record["gpus"] else "; no GPU")
           + f"; TF {record['tf_version']}, Keras {record['keras_version']}; {record['date']}.",
           "Big-square matmul ceilings: " + ", ".join(
               f"{dtype}{' (as TF32)' if c.get('math') == 'tf32' else ''} "
               f"{c['flops_per_sec'] / 1e9:,.0f} GFLOP/s ({c['best']})"
               for dtype, c in record["ceilings"].items()) + ".",
           "Own ceiling: the model's matmuls and convolutions alone, forward and backward, at "
           "their shapes and precision. Examples/s; first step: seconds from building the model "
           "to the end of the first call.", ""]
  lines += format_models(record)
  backend_lines = format_backends(record)
  if backend_lines:
    lines += ["", "Keras backends (examples/s; fit: Keras's fit with the harness's steps per "
              "execution, XLA as the harness ran):", ""] + backend_lines
  reasons = {row["precision_reason"] for row in record["models"].values()}
  lines += [""] + [f"- precision {reason}" for reason in sorted(reasons)]
  if "total" in record.get("seconds", {}):
    lines += ["", format_seconds(record)]
  return "\n".join(lines)


def format_seconds(record: dict) -> str:
  """Where the quick benchmark's time went: wall and CPU seconds (this process and the ones it
  started), in all and by part. On a shared machine the CPU seconds are the steadier figure."""
  def spent(part: dict) -> str:
    return f"{part['wall_s']:,.0f} s ({part['cpu_s']:,.0f} CPU s)"

  def summed(parts) -> dict:
    parts = list(parts)
    return {key: sum(part[key] for part in parts) for key in ("wall_s", "cpu_s")}

  seconds = record["seconds"]
  parts = [f"the backend table {spent(seconds['backends'])}"] if record.get("backends") else []
  parts.append(f"ceilings {spent(seconds['ceilings'])}")
  parts += [f"{name} {spent(summed(row['seconds'].values()))}"
            for name, row in record["models"].items()]
  return (f"Took {spent(seconds['total'])}, this process and those it started: "
          + ", ".join(parts) + ".")


def define_flags() -> None:
  """The benchmark's flags; defined only when it runs, so tests can import its functions."""
  flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist",
                      "Folder of Fashion-MNIST's (or MNIST's) four IDX files.")
  flags.DEFINE_list("batch_sizes", ["32", "1024", "4096"], "Global batch sizes to measure.")
  flags.DEFINE_list("strategies", ["default", "mirrored"],
                    "default, and mirrored over 2 logical CPUs.")
  flags.DEFINE_integer("repeats", 3, "Interleaved rounds of every throughput measurement.",
                       lower_bound=1)
  flags.DEFINE_integer("accuracy_repeats", 2, "Rounds of the time-to-accuracy runs; 0 skips them.",
                       lower_bound=0)
  flags.DEFINE_boolean("tiny", False, "Seconds-long: a slice of the data, short measurements "
                       "and time-to-accuracy runs; checks that it works, figures meaningless.")
  flags.DEFINE_boolean("quick", False, "Minutes on 2 CPU cores, any machine (CPU or GPUs): "
                       "the machine, its ceilings, and one row per model (mlp, cnn, resnet18, "
                       "resnet50 on synthetic data) for the harness, a tuned fit and fit's "
                       "defaults; where another Keras backend is installed, first the harness "
                       "and a tuned fit on TensorFlow and on each of them, one device and one "
                       "precision per model for all (JAX: the mlp and cnn on CPUs, every model "
                       "on GPUs). Run it first on a new machine.")
  flags.DEFINE_string("output", "benchmark.json", "Where to write the JSON results.")
  flags.DEFINE_string("report", "", "Where to write the printed report as Markdown too "
                      "(docs/benchmark.md comes from it); empty: not written.")
  input_benchmark.define_flags()


def main(argv):
  del argv  # Unused.
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  console.quiet()  # Before TensorFlow loads: its start-up chatter stays off the report.
  from trainer.distribute import hardware  # pylint: disable=g-import-not-at-top
  # Before anything touches a GPU: this process then holds only what it uses, and the runs it
  # starts as child processes (the blog script, fast.cfg) find the rest free.
  hardware.configure_gpu_memory(True)
  if FLAGS.input:
    input_benchmark.main(FLAGS)
    return
  with tempfile.TemporaryDirectory(prefix="benchmark-") as root:
    if FLAGS.quick:
      # Each sub-run's own output in a file beside --output, which outlives the runs' folders.
      log_dir = os.path.splitext(FLAGS.output)[0] + "-logs"
      print(f"Each run's output: {log_dir}/", flush=True)
      record = run_quick(root, log_dir)
      record["seconds"]["total"] = {"wall_s": round(time.perf_counter() - _STARTED, 1),
                                    "cpu_s": round(timing.cpu_seconds(), 1)}
    else:
      record = run_benchmark(FLAGS.data_dir, [int(b) for b in FLAGS.batch_sizes],
                             FLAGS.strategies, FLAGS.repeats, FLAGS.accuracy_repeats, FLAGS.tiny,
                             root)
  safe_files.write_json(FLAGS.output, record, sort_keys=False)  # Rows stay in table order.
  report = format_quick_report(record) if FLAGS.quick else format_report(record)
  print("\n" + report)
  if FLAGS.report:
    with open(FLAGS.report, "w") as f:
      f.write("# Benchmark\n\n" + report + "\n")
  print(f"\nWritten to {FLAGS.output}" + (f" and {FLAGS.report}" if FLAGS.report else ""))


if __name__ == "__main__":
  define_flags()
  command.run(main)
