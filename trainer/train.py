"""train_and_evaluate: the training loop of every run, the same code under every strategy.

The loop is our own, on strategy.run over a distributed dataset, rather than model.fit: Keras 3's
fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), while this loop trains with
Keras's model, optimizer, loss and metrics under every strategy. It reads top to bottom: devices
and strategy, workdir, input, model and checkpoint, step functions, the loop, export and results.

A run resumes: rerunning the same command on its workdir continues from the newest checkpoint,
step-exact (the batches after it are exactly those an uninterrupted run would see).
"""

import hashlib
import math
import os
import shutil
import sys
import time
from typing import Optional, Tuple

from absl import logging
import keras
import tensorflow as tf

from trainer import checkpointing
from trainer import cluster
from trainer import config as config_lib
from trainer import distribution
from trainer import errors
from trainer import export
from trainer import hardware
from trainer import input_pipeline
from trainer import models
from trainer import precision as precision_lib
from trainer import preemption
from trainer import run_record
from trainer import summaries
from trainer import watchdog as watchdog_lib


class Interrupted(errors.UserError):
  """SIGTERM or SIGINT arrived; the run was saved and can resume. Exits 128 + the signal."""

  def __init__(self, message: str, signal_number: int):
    super().__init__(message)
    self.exit_code = 128 + signal_number


class Diverged(errors.UserError):
  """The loss became NaN or infinite."""

  exit_code = 4


def _check_workdir(config: config_lib.Config, run_config: dict) -> None:
  """Refuses a workdir that holds something other than this run, before anything loads."""
  if config.overwrite or not os.path.isdir(config.workdir) or not os.listdir(config.workdir):
    return
  saved = checkpointing.read_run_config(config.workdir)
  if saved is None:
    raise errors.UserError(
        f"--workdir={config.workdir} is not empty and holds no run of this trainer. Give a new "
        "--workdir, or add --overwrite to delete what is there.")
  checkpointing.check_same_math(saved, run_config, config.workdir)


def _loop_settings(config: config_lib.Config, num_replicas: int) -> Tuple[int, bool]:
  """Returns (steps_per_loop, jit_compile), resolving the automatic choices."""
  steps_per_loop = config.steps_per_loop or 100
  jit_compile = config.jit_compile if config.jit_compile is not None else num_replicas == 1
  return steps_per_loop, jit_compile


MAX_PACK = 25


def _pack_size(strategy: tf.distribute.Strategy, num_replicas: int, jit_compile: bool,
               start_step: int, steps_per_epoch: int, log_every: int,
               checkpoint_every: int) -> int:
  """How many steps one XLA call runs: the largest K <= MAX_PACK dividing every loop boundary.

  Running K steps in one compiled call removes the per-step host overhead (dataset iterator,
  strategy.run): at batch 32 on a 2-core CPU, K=25 measured 97k examples/s against 55k for one
  step per call. Only under XLA with one replica (default, one_device, mirrored over one
  device): XLA here cannot compile the gradient sum across several replicas, nor
  multi_worker_mirrored's collective ops. K divides the epoch length, the log and checkpoint
  intervals and the start step, so every boundary, and so every resume point, falls between
  packs.
  """
  if (not jit_compile or num_replicas > 1 or
      distribution.strategy_name(strategy) == "multi_worker_mirrored"):
    return 1
  common = math.gcd(steps_per_epoch, log_every, checkpoint_every or steps_per_epoch,
                    start_step or steps_per_epoch)
  return max(k for k in range(1, MAX_PACK + 1) if common % k == 0)


def _steps_to_boundary(step: int, every: int) -> int:
  """Steps from `step` to the next multiple of `every` (0 means never)."""
  return every - step % every if every else sys.maxsize


def train_and_evaluate(config: config_lib.Config, start_time: Optional[float] = None) -> dict:
  """Trains and evaluates the model that `config` describes; returns the results.json fields."""
  start_time = start_time or time.time()
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()

  # ---------------------------------------------------------------- Devices and strategy.
  hardware.split_cpu(config.cpu_devices)
  tf_config, task = None, None
  if config.strategy == "multi_worker_mirrored":
    tf_config = cluster.tf_config_from_environment(config.worker_hosts, config.task_index)
    task = cluster.describe_task(tf_config)
  # A worker whose peers never come (or die) blocks inside TensorFlow; the watchdog bounds that.
  watchdog = watchdog_lib.ProgressWatchdog(config.worker_timeout, task) if task else None
  heartbeat = watchdog.beat if watchdog else lambda: None
  strategy = distribution.make_strategy(config.strategy, tf_config)
  heartbeat()
  num_replicas = strategy.num_replicas_in_sync
  distribution.check_batch_size(config.batch_size, strategy)
  is_chief = distribution.is_chief(strategy)
  policy, policy_reason = precision_lib.resolve_precision(config.precision)
  steps_per_loop, jit_compile = _loop_settings(config, num_replicas)  # In steps; see `pack`.
  device = hardware.describe_devices()
  run_config = {**config.to_dict(), "precision": policy, "num_replicas": num_replicas,
                "strategy": distribution.strategy_name(strategy)}
  if is_chief:
    _check_workdir(config, run_config)
  logging.info("Strategy %s with %d replicas on %s; precision %s (%s); %d steps per loop, XLA %s.",
               run_config["strategy"], num_replicas, device, policy, policy_reason,
               steps_per_loop, "on" if jit_compile else "off")

  # ---------------------------------------------------------------- Input.
  pipeline = input_pipeline.make_input_pipeline(
      config.dataset, config.data_dir, config.tfds_data_dir, config.batch_size, config.seed,
      config.max_steps_per_epoch)
  eval_dataset = distribution.distribute_dataset(strategy, pipeline.eval_dataset())
  total_steps = config.epochs * pipeline.steps_per_epoch
  heartbeat()

  # ---------------------------------------------------------------- Model and checkpoint.
  with strategy.scope():
    model = models.build_model(config.api, config.hidden_units, config.seed, policy)
    optimizer = keras.optimizers.Adam(config.learning_rate)
    if precision_lib.uses_loss_scaling(policy):
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)  # Dynamic loss scaling.
    optimizer.build(model.trainable_variables)
    train_loss = keras.metrics.Mean("loss")
    train_accuracy = keras.metrics.SparseCategoricalAccuracy("accuracy")
    eval_loss = keras.metrics.Mean("loss")
    eval_accuracy = keras.metrics.SparseCategoricalAccuracy("accuracy")
    checkpointer = checkpointing.Checkpointer(config.workdir, is_chief, config.keep_checkpoints,
                                              model=model, optimizer=optimizer)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)
  step = 0 if config.overwrite else checkpointer.restore_latest()
  # Every worker restored the chief's step, so all leave here together; a worker that went on
  # alone would wait for the others in its first collective op.
  if step >= total_steps and os.path.isfile(
      os.path.join(config.workdir, run_record.RESULTS_FILE)):
    if is_chief:
      print(f"{config.workdir} already finished all {total_steps} steps; add --epochs to train "
            "further.", flush=True)
    checkpointer.close()
    if watchdog:
      watchdog.stop()
    return run_record.read_results(config.workdir)

  # ---------------------------------------------------------------- Workdir.
  # Written only once the input has loaded and the checkpoint is known, so bad input leaves
  # nothing behind; a run with no checkpoint yet starts clean.
  if is_chief and step == 0:
    shutil.rmtree(config.workdir, ignore_errors=True)
    os.makedirs(config.workdir)
    checkpointing.write_run_config(config.workdir, run_config)
  writer = summaries.RunWriter(config.workdir, enabled=is_chief)
  if step:
    logging.info("Resuming from step %d of %d.", step, total_steps)

  # ---------------------------------------------------------------- Step functions.
  def forward_backward(images, labels):
    with tf.GradientTape() as tape:
      probabilities = model(images, training=True)
      per_example_loss = loss_fn(labels, probabilities)
      # Divide by the GLOBAL batch: the optimizer sums gradients across replicas.
      loss = tf.reduce_sum(per_example_loss) / config.batch_size
      scaled_loss = optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled_loss, model.trainable_variables)
    return gradients, per_example_loss, probabilities

  def apply_update(images, labels):
    gradients, per_example_loss, probabilities = forward_backward(images, labels)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    return per_example_loss, probabilities

  if jit_compile and num_replicas > 1:
    # Several replicas: the cross-replica gradient sum cannot run inside XLA, the rest can.
    forward_backward = tf.function(forward_backward, jit_compile=True)

  def replica_train_step(images, labels):
    per_example_loss, probabilities = apply_update(images, labels)
    train_loss.update_state(per_example_loss)
    train_accuracy.update_state(labels, probabilities)
    return tf.cast(tf.reduce_any(~tf.math.is_finite(per_example_loss)), tf.float32)

  pack = _pack_size(strategy, num_replicas, jit_compile, step, pipeline.steps_per_epoch,
                    config.log_every, config.checkpoint_every)

  def train_step(images, labels, index=None):
    # Trains on the batch (or the index-th batch of the pack) of each replica; returns 1.0 if
    # the loss was not finite on any replica.
    def replica_step(images, labels):
      if index is None:
        return replica_train_step(images, labels)
      return replica_train_step(images[index], labels[index])
    return strategy.reduce(tf.distribute.ReduceOp.SUM,
                           strategy.run(replica_step, args=(images, labels)), axis=None)

  def train_pack(images, labels):
    # One element of the training dataset: a batch, or a pack of `pack` batches run as an
    # in-graph loop. Returns one not-finite flag per step. The loop sits outside strategy.run:
    # inside a replica function, the optimizer's cross-replica sync (a merge_call) is refused.
    if pack == 1:
      return tf.reshape(train_step(images, labels), [1])
    flags = tf.TensorArray(tf.float32, size=pack)
    for index in tf.range(pack):
      flags = flags.write(index, train_step(images, labels, index))
    return flags.stack()

  if jit_compile and num_replicas == 1:
    # One replica: XLA fuses whole steps (optimizer update and metrics included) into one call.
    train_pack = tf.function(train_pack, jit_compile=True)

  @tf.function
  def train_loop(iterator, num_packs):
    # Several steps per call: the Python round trip is paid once per loop, not once per step.
    # Returns 0, or the 1-based step of this loop whose loss was not finite (it stops there).
    bad_step = tf.constant(0, tf.int64)
    for index in tf.range(num_packs, dtype=tf.int64):
      flags = train_pack(*next(iterator))
      if tf.reduce_any(flags > 0):
        bad_step = index * pack + tf.argmax(tf.cast(flags > 0, tf.int64)) + 1
        break
    return bad_step

  def replica_eval_step(images, labels, weights):
    probabilities = model(images, training=False)
    eval_loss.update_state(loss_fn(labels, probabilities), sample_weight=weights)
    eval_accuracy.update_state(labels, probabilities, sample_weight=weights)

  @tf.function
  def evaluate_loop(dataset):
    for batch in dataset:
      strategy.run(replica_eval_step, args=batch)

  def evaluate() -> Tuple[float, float]:
    eval_loss.reset_state()
    eval_accuracy.reset_state()
    evaluate_loop(eval_dataset)
    heartbeat()
    return float(eval_loss.result()), float(eval_accuracy.result())

  # ---------------------------------------------------------------- Run description.
  environment = {"tf_version": tf.__version__, "keras_version": keras.__version__,
                 "python_version": sys.version.split()[0], "device": device,
                 "devices": [d.name for d in tf.config.list_logical_devices()],
                 "num_replicas": num_replicas, "precision_reason": policy_reason,
                 "steps_per_loop": steps_per_loop, "jit_compile": jit_compile,
                 "steps_per_xla_call": pack}
  hparams = {"api": config.api, "strategy": run_config["strategy"], "num_replicas": num_replicas,
             "precision": policy, "device": device, "global_batch_size": config.batch_size,
             "dataset": config.dataset, "hidden_units": config.hidden_units, "seed": config.seed}
  if step == 0:
    writer.run_info(hparams, run_config, environment)

  def save_checkpoint():
    checkpointer.save(step)
    heartbeat()

  # ---------------------------------------------------------------- Training loop.
  timed_examples, timed_seconds = 0, 0.0
  first_step_s = None
  window_rates = []  # examples/sec of each log window, as in TensorBoard.
  clock = time.perf_counter()
  loss_value = math.nan
  test_loss = test_accuracy = None
  with cluster.peer_failures_reported(task), preemption.StopRequests() as stop:
    # One iterator for the whole run: the next epoch is prepared while this one trains.
    iterator = iter(distribution.distribute_dataset(
        strategy, pipeline.training_batches(step, config.epochs, pack)))
    for epoch in range(step // pipeline.steps_per_epoch, config.epochs):
      step_in_epoch = step - epoch * pipeline.steps_per_epoch
      progress = keras.utils.Progbar(pipeline.steps_per_epoch, verbose=1 if is_chief else 0,
                                     stateful_metrics=["loss", "accuracy"])
      if is_chief:
        print(f"Epoch {epoch + 1}/{config.epochs}", flush=True)
      window_steps, window_seconds = 0, 0.0
      while step_in_epoch < pipeline.steps_per_epoch:
        if stop.signal_number:
          save_checkpoint()
          raise Interrupted(
              f"Stopped by signal {stop.signal_number} and saved at step {step} of "
              f"{total_steps}. Rerun the same command to resume from there.",
              stop.signal_number) from None
        # Loops end at log points, checkpoints and the epoch's end; every boundary is a multiple
        # of `pack`, so num_steps is too. The process's first loop is one pack: it carries the
        # tracing cost, which is left out of every throughput figure.
        num_steps = pack if first_step_s is None else min(
            max(pack, steps_per_loop // pack * pack), pipeline.steps_per_epoch - step_in_epoch,
            _steps_to_boundary(step, config.log_every),
            _steps_to_boundary(step, config.checkpoint_every))
        bad_step = int(train_loop(iterator, tf.constant(num_steps // pack, tf.int64)))
        heartbeat()  # The int() above waited for the loop to finish.
        loss_value = float(train_loss.result())
        if bad_step or not math.isfinite(loss_value):
          raise Diverged(
              f"The training loss became {loss_value} at step "
              f"{step + (bad_step or num_steps)}. Stopped "
              f"without saving; the last good checkpoint (step {checkpointer.step.numpy()}) is "
              "kept. Lower --learning_rate, or use --precision=float32, and rerun the same "
              "command to resume from it.")
        step += num_steps
        step_in_epoch += num_steps
        # Throughput counts all wall time between loop boundaries (logging and checkpoints
        # included) except evaluation and the process's first, tracing, loop.
        now = time.perf_counter()
        if first_step_s is None:
          first_step_s = time.time() - start_time
        else:
          timed_examples += num_steps * config.batch_size
          timed_seconds += now - clock
          window_steps += num_steps
          window_seconds += now - clock
        clock = now
        accuracy_value = float(train_accuracy.result())
        progress.update(step_in_epoch, [("loss", loss_value), ("accuracy", accuracy_value)])
        if step % config.log_every == 0 or step_in_epoch == pipeline.steps_per_epoch:
          scalars = {"loss": loss_value, "accuracy": accuracy_value}
          if window_steps:
            scalars["examples_per_sec"] = window_steps * config.batch_size / window_seconds
            scalars["step_time_ms"] = 1000 * window_seconds / window_steps
            window_rates.append(scalars["examples_per_sec"])
          writer.scalars("train", step, scalars)
          train_loss.reset_state()
          train_accuracy.reset_state()
          window_steps, window_seconds = 0, 0.0
        if step % (config.checkpoint_every or sys.maxsize) == 0 and (
            step_in_epoch < pipeline.steps_per_epoch):
          save_checkpoint()

      test_loss, test_accuracy = evaluate()
      writer.scalars("eval", step, {"loss": test_loss, "accuracy": test_accuracy})
      save_checkpoint()
      if is_chief:
        print(f"  test loss {test_loss:.4f}, test accuracy {test_accuracy:.4f}", flush=True)
      clock = time.perf_counter()

    if test_accuracy is None:  # Every step was already trained: a run stopped before its end.
      test_loss, test_accuracy = evaluate()

  # ---------------------------------------------------------------- Export and results.
  if watchdog:
    watchdog.stop()
  checkpointer.close()
  # Every worker logs this; replicas in sync end with the same weights, hence the same digest.
  weights_digest = hashlib.sha256(
      b"".join(variable.numpy().tobytes() for variable in model.weights)).hexdigest()
  logging.info("%s: final train loss %.6f, weights sha256 %s", task or "this process",
               loss_value, weights_digest)
  examples_per_sec = timed_examples / timed_seconds if timed_seconds else 0.0
  results = {
      "api": config.api, "strategy": run_config["strategy"], "num_replicas": num_replicas,
      "precision": policy, "dataset": config.dataset, "epochs": config.epochs,
      "global_batch_size": config.batch_size, "params": model.count_params(),
      "hidden_units": config.hidden_units, "seed": config.seed, "steps": step,
      "steps_per_epoch": pipeline.steps_per_epoch, "steps_per_loop": steps_per_loop,
      "steps_per_xla_call": pack,
      "jit_compile": jit_compile, "test_accuracy": test_accuracy, "test_loss": test_loss,
      "train_loss": loss_value, "weights_sha256": weights_digest,
      "examples_per_sec": examples_per_sec, "examples_per_sec_windows": window_rates,
      "time_to_first_step_s": first_step_s,
      "wall_time_s": time.time() - start_time, "device": device,
      "tf_version": tf.__version__, "keras_version": keras.__version__,
  }
  writer.scalars("run", step, {"test_accuracy": test_accuracy,
                               "examples_per_sec": examples_per_sec})
  writer.close()
  if is_chief:
    results["exports"] = export.export_model(model, config.workdir)
    run_record.write_results(config.workdir, results)
    print(f"{config.api} on {run_config['strategy']} x{num_replicas} ({policy}, {device}): "
          f"test accuracy {test_accuracy:.4f}, loss {test_loss:.4f}, "
          f"{examples_per_sec:,.0f} examples/s, {results['wall_time_s']:.1f} s", flush=True)
  return results
