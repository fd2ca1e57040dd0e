"""The harness against Keras's fit on each model kind, and against each model's own ceiling.

For every workload (the mlp, the cnn, resnet18 on 32x32x3 and resnet50 on 224x224x3, all on
synthetic data so no dataset is needed) at the precision and XLA setting the harness picks here:
  harness     trainer.train.train_and_evaluate with default flags
  tuned_fit   an expert's fit of the same model and precision: a cached tf.data pipeline,
              steps_per_execution as the harness's steps per call, XLA as the harness chose it
              (or the better of on and off, with `jit_both`: the mlp, and every model on GPUs)
  plain_fit   fit's defaults: float32, compile() as it comes, one step per execution
  ceiling     the model's own matmuls and convolutions alone (trainer.bench.op_ceiling)
and how long each peer takes before its first step (building, tracing, compiling, running it).
trainer.benchmark --quick prints these; the full benchmark adds mirrored over 2 logical CPUs.
"""

import contextlib
import dataclasses
import math
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

from trainer import config as config_lib
from trainer.bench import op_ceiling
from trainer.bench import sub_run_log
from trainer.bench import timing

NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Workload:
  """A model kind at one batch size, with the steps to warm up and to time."""

  model: str
  image_shape: tuple
  batch_size: int
  # Also the steps per call of every peer. Each peer leaves its first warmup_steps out: fit its
  # first execution, the harness its first log window (its first call, which compiles, is one
  # pack, and the calls after it would otherwise count the steps still warming up).
  warmup_steps: int
  timed_steps: int

  @property
  def name(self) -> str:
    return f"{self.model}/{self.batch_size}"


# The fewest steps each peer times: two calls, or for a resnet one (a step of a second or more
# on a CPU). timed_steps_for sizes every window to last seconds at the model's own ceiling, so a
# faster machine (a GPU) times more. The mlp's call is 50 steps, so that whole calls fill its
# synthetic epoch (58 batches of 1024).
QUICK_WORKLOADS = (Workload("mlp", (28, 28, 1), 1024, 50, 100),
                   Workload("cnn", (28, 28, 1), 256, 10, 20),
                   Workload("resnet18", (32, 32, 3), 128, 2, 2),
                   Workload("resnet50", (224, 224, 3), 16, 2, 2))


def quick_workloads() -> Tuple[Workload, ...]:
  """QUICK_WORKLOADS with each batch rounded up to a multiple of this machine's GPUs, which
  auto mirrors over: 3, 5, 6 or 7 GPUs cannot split 1024, 256, 128 or 16."""
  from trainer.distribute import distribution  # pylint: disable=g-import-not-at-top
  from trainer.distribute import hardware  # pylint: disable=g-import-not-at-top
  replicas = len(hardware.gpus()) or 1
  return tuple(dataclasses.replace(
      workload, batch_size=distribution.batch_for_replicas(workload.batch_size, replicas))
               for workload in QUICK_WORKLOADS)


# The benchmark's --tiny: checks every path in seconds, figures meaningless.
TINY_WORKLOADS = (Workload("mlp", (28, 28, 1), 32, 2, 4), Workload("cnn", (28, 28, 1), 32, 2, 4))


WINDOW_SECONDS = 2.0  # The least time each peer's timed window should last.


def timed_steps_for(workload: Workload, ceiling_examples_per_sec: float,
                    window_seconds: float = WINDOW_SECONDS) -> int:
  """The steps to time for `workload` on a machine whose own ceiling for it (op_ceiling) is
  `ceiling_examples_per_sec`: enough that the window lasts `window_seconds` even at the ceiling
  (a real step is slower, so it lasts longer), never fewer than the workload's own count, and
  whole calls of `warmup_steps`."""
  steps = math.ceil(window_seconds * ceiling_examples_per_sec / workload.batch_size)
  calls = -(-max(steps, workload.timed_steps) // workload.warmup_steps)
  return calls * workload.warmup_steps


def settings_for(workload: Workload, strategy: str = "default") -> config_lib.Config:
  """The harness's Config for `workload`: its defaults but for the model, data and length. It
  trains warmup_steps + timed_steps, in calls of warmup_steps, over as many epochs of whole
  calls as the synthetic data needs (each epoch's evaluation and checkpoint are not timed)."""
  from trainer.data import input_pipeline  # pylint: disable=g-import-not-at-top
  steps = workload.warmup_steps + workload.timed_steps
  calls_an_epoch = max(1, input_pipeline.SYNTHETIC_TRAIN_SIZE // workload.batch_size
                       // workload.warmup_steps)
  epoch = min(steps, calls_an_epoch * workload.warmup_steps)
  return config_lib.Config.from_flags(
      model=workload.model, dataset="synthetic", image_shape=workload.image_shape,
      num_classes=NUM_CLASSES, batch_size=workload.batch_size, strategy=strategy,
      # auto is what a user gets: mirrored over every GPU, default on a CPU.
      cpu_devices=2 if strategy == "mirrored" else 1, epochs=-(-steps // epoch),
      max_steps_per_epoch=epoch, eval_steps=1,
      num_test_examples=workload.batch_size,  # The run's last evaluation covers it whole.
      steps_per_loop=workload.warmup_steps, log_every=workload.warmup_steps,
      checkpoint_every=0, progress="none",
      export_saved_model=False)  # Measured, not served: a ResNet's SavedModel takes seconds.


def resolved(workload: Workload) -> config_lib.RunSettings:
  """What the harness picks for `workload` on one replica of this machine: precision, XLA."""
  from trainer.distribute import precision  # pylint: disable=g-import-not-at-top
  config = settings_for(workload)
  policy, reason = precision.resolve_precision(
      "auto", workload.model, config_lib.compiles_with_xla(
          config.loop.jit_compile, workload.model, config.data.batch_size, 1))
  return config_lib.RunSettings(config=config, strategy="default", num_replicas=1,
                                precision=policy, precision_reason=reason, device="",
                                is_chief=True)


def measure_harness(workload: Workload, workdir: str, strategy: str = "default",
                    **settings) -> dict:
  """examples/s of the harness after its first warmup_steps, as fit's are timed, and its
  seconds before the first step, counted from building the model, as the fit peers count
  theirs. `settings`: flags to change (backend, precision)."""
  from trainer import train  # pylint: disable=g-import-not-at-top
  results = train.train_and_evaluate(
      settings_for(workload, strategy).replace(workdir=workdir, **settings))
  startup = results["startup_s"]
  return {"examples_per_sec": steady_rate(results, workload),
          "first_step_s": startup["model"] + startup["first_step"],
          "precision": results["precision"], "jit_compile": results["jit_compile"],
          "strategy": results["strategy"], "replicas": results["num_replicas"]}


def steady_rate(results: dict, workload: Workload) -> float:
  """The harness's examples/s over its log windows after its first warmup_steps steps.

  Its windows end at each call of warmup_steps (the log interval), and its first call, one
  pack, is in none; the first window holds the rest of the first warmup_steps unless that pack
  was the whole of them. The windows after it are alike in length, so their rate together is
  their harmonic mean."""
  windows = results["examples_per_sec_windows"]
  if results["steps_per_xla_call"] < workload.warmup_steps:
    windows = windows[1:]
  if not windows:  # Too short a run to leave a window out.
    return results["examples_per_sec"]
  return len(windows) / sum(1.0 / rate for rate in windows)


def _synthetic_dataset(workload: Workload):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images = tf.random.stateless_uniform([workload.batch_size * 4, *workload.image_shape], [0, 0])
  labels = tf.random.stateless_uniform([workload.batch_size * 4], [0, 1], maxval=NUM_CLASSES,
                                       dtype=tf.int64)
  return (tf.data.Dataset.from_tensor_slices((images, labels)).cache().repeat()
          .batch(workload.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def measure_fit(workload: Workload, precision: str, jit_compile, steps_per_execution: int,
                strategy=None) -> dict:
  """examples/s of Keras's fit on `workload` and its seconds from building the model to the
  end of the first execution."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.models import factory  # pylint: disable=g-import-not-at-top
  strategy = strategy or tf.distribute.get_strategy()
  marks: List[float] = []

  class Marks(keras.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):
      marks.append(time.perf_counter())

  start = time.perf_counter()
  with strategy.scope():
    model = factory.build_model(workload.model, "functional", workload.image_shape, NUM_CLASSES,
                                precision=precision)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)
  calls = 1 + -(-workload.timed_steps // steps_per_execution)
  model.fit(_synthetic_dataset(workload), steps_per_epoch=calls * steps_per_execution, epochs=1,
            verbose=0, callbacks=[Marks()])
  # A callback fires once per execution of steps_per_execution steps.
  timed = (len(marks) - 1) * steps_per_execution
  return {"examples_per_sec": timed * workload.batch_size / (marks[-1] - marks[0]),
          "first_step_s": marks[0] - start}


def fit_can_compile(strategy) -> bool:
  """Whether Keras 3's fit runs with XLA and steps_per_execution > 1 under `strategy` (None:
  the default): under MirroredStrategy it fails with both ("You must feed a value for
  placeholder tensor", keras-team/keras#19246)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return strategy is None or isinstance(strategy, type(tf.distribute.get_strategy()))


def measure_tuned_fit(workload: Workload, harness: config_lib.RunSettings,
                      jit_both: bool = False, strategy=None) -> dict:
  """The tuned fit at the harness's precision; XLA as the harness chose, or the better of both.

  Under MirroredStrategy it keeps its pipeline only (see `fit_can_compile`).
  """
  from trainer.distribute import hardware  # pylint: disable=g-import-not-at-top
  one_device = fit_can_compile(strategy)
  # XLA's CPU convolutions are far slower (trainer.config.compiles_with_xla): on CPUs the
  # convnets' better of the two is known without minutes of waiting for it.
  jit_both = jit_both and (workload.model == "mlp" or bool(hardware.gpus()))
  choices = ((False, True) if jit_both else (harness.jit_compile,)) if one_device else (False,)
  best = None
  for jit in choices:
    measured = measure_fit(workload, harness.precision, jit,
                           workload.warmup_steps if one_device else 1, strategy)
    measured["jit_compile"] = jit
    if best is None or measured["examples_per_sec"] > best["examples_per_sec"]:
      best = measured
  return best


def measure_plain_fit(workload: Workload, strategy=None) -> dict:
  """fit's defaults: float32, jit_compile="auto" (off on CPU), one step per execution."""
  return measure_fit(workload, "float32", "auto", 1, strategy)


def measure_ceiling(workload: Workload, precision: str) -> dict:
  """The model's own matmuls and convolutions alone (op_ceiling), at the harness's precision."""
  from trainer.models import factory  # pylint: disable=g-import-not-at-top
  model = factory.build_model(workload.model, "functional", workload.image_shape, NUM_CLASSES,
                              precision=precision)
  return op_ceiling.model_ceiling(model, workload.batch_size, workload.image_shape)


def run_workloads(workloads: Sequence[Workload], root: str, jit_both: bool = False,
                  strategies: Sequence[str] = ("default",),
                  window_seconds: Optional[float] = None,
                  log_dir: Optional[str] = None) -> Dict[str, dict]:
  """Every peer of every workload under each of `strategies`; rows keyed "model/batch", the
  first strategy's peers under "peers", the others' under "peers_<strategy>".

  With `window_seconds`, each timed window is sized to last that long (timed_steps_for). With
  `log_dir`, each peer's own output goes to a file there (sub_run_log), named on the console
  beside its figure.
  """
  from trainer.distribute import distribution  # pylint: disable=g-import-not-at-top
  rows = {}

  def logged(name: str):
    if log_dir is None:
      return contextlib.nullcontext()
    return sub_run_log.captured(os.path.join(log_dir, name.replace("/", "-") + ".log"))

  for workload in workloads:
    chosen = resolved(workload)
    row = {"model": workload.model, "image_shape": list(workload.image_shape),
           "batch_size": workload.batch_size, "precision": chosen.precision,
           "precision_reason": chosen.precision_reason}
    seconds = row["seconds"] = {}
    with timing.spent(seconds, "ceiling"):
      row["ceiling"] = measure_ceiling(workload, chosen.precision)
    if window_seconds:
      # The ceiling is one device's; the first strategy may train on several.
      devices = distribution.make_strategy(strategies[0]).num_replicas_in_sync
      workload = dataclasses.replace(workload, timed_steps=timed_steps_for(
          workload, devices * row["ceiling"]["examples_per_sec"], window_seconds))
    row["timed_steps"] = workload.timed_steps
    for strategy_name in strategies:
      suffix = "" if strategy_name == strategies[0] else f"/{strategy_name}"
      strategy = distribution.make_strategy(strategy_name)
      peers = {}
      measures = {
          "harness": lambda: measure_harness(
              workload, os.path.join(root, workload.model + strategy_name), strategy_name),
          "tuned_fit": lambda: measure_tuned_fit(workload, chosen, jit_both, strategy),
          "plain_fit": lambda: measure_plain_fit(workload, strategy)}
      for name, measure in measures.items():
        with logged(f"{workload.name}{suffix}-{name}"), timing.spent(seconds, name + suffix):
          peers[name] = measure()
        print(f"  {workload.name}{suffix} {name}: {peers[name]['examples_per_sec']:,.1f} "
              "examples/s", flush=True)
      row["peers" + suffix.replace("/", "_")] = peers
    rows[workload.name] = row
  return rows


def shares(row: dict, big_square_flops: Optional[float]) -> dict:
  """The harness's throughput against the tuned fit, fit's defaults, and the ceilings (which are
  one device's, so against the harness's throughput per replica)."""
  harness = row["peers"]["harness"]["examples_per_sec"]
  per_device = harness / row["peers"]["harness"].get("replicas", 1)
  ceiling = row["ceiling"]
  figures = {"over_tuned_fit": harness / row["peers"]["tuned_fit"]["examples_per_sec"],
             "over_plain_fit": harness / row["peers"]["plain_fit"]["examples_per_sec"],
             "of_own_ceiling": per_device / ceiling["examples_per_sec"]}
  if big_square_flops:
    figures["of_big_square_ceiling"] = (per_device * ceiling["flops_per_example"]
                                        / big_square_flops)
  if "peers_mirrored" in row:
    figures["mirrored_share"] = (row["peers_mirrored"]["harness"]["examples_per_sec"]
                                 / harness)
  return figures
