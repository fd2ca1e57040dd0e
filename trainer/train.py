"""train_and_evaluate: one run, from a Config to results.json, the same code under every strategy.

It reads top to bottom in stages (runtime, input, task and checkpoint, workdir, the loop, export
and results) and owns no stage itself: each lives in its own module. Everything it opens sits in
one ExitStack, so the watchdog, the checkpointer's scratch folder, the TensorBoard writers and
the event log are closed on every way out: success, bad input, a diverged loss, a signal, a lost
peer. The chief's event log (records.events) says what each process of the run did; the run's
goodput and MFU come from it at the end.

A run resumes: rerunning the same command on its workdir continues from the newest checkpoint,
step-exact (the batches after it are exactly those an uninterrupted run would see).
"""

import contextlib
import dataclasses
import re
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from absl import logging
import keras
import tensorflow as tf

from trainer import config as config_lib
from trainer.data import input_pipeline
from trainer.data import service
from trainer.backends import interface
from trainer.distribute import device_plan
from trainer import errors
from trainer.loop import controller as controller_lib
from trainer.loop import preemption
from trainer.loop import profiling
from trainer.loop import progress
from trainer.loop import schedule
from trainer.loop import startup
from trainer.loop import throughput
from trainer.models import factory
from trainer.records import best_model
from trainer.records import checkpointing
from trainer.records import events as events_lib
from trainer.records import export
from trainer.records import goodput as goodput_lib
from trainer.records import mfu as mfu_lib
from trainer.records import run_record
from trainer.records import summaries
from trainer.records import workdir as workdir_lib
from trainer.records import workdir_lock


def train_and_evaluate(config: config_lib.Config, start_time: Optional[float] = None) -> dict:
  """Trains and evaluates the model that `config` describes; returns the results.json fields."""
  start_time = start_time or time.time()
  clock = startup.StartupClock(start_time)
  clock.mark("imports")
  with contextlib.ExitStack() as stack:
    # ---------------------------------------------------------------- Device plan and runtime.
    devices = _device_plan(config)
    backend = interface.get(config.runtime.backend)  # The one place that picks it.
    runtime, peak = _open_runtime(stack, config, backend, devices)
    settings = runtime.settings

    # ---------------------------------------------------------------- Input.
    built = {}  # The task, once it exists, for the out-of-memory message.
    build_model, pipeline = _open_input(stack, settings, runtime, clock, built)

    # ---------------------------------------------------------------- Task and checkpoint.
    task = built["task"] = backend.make_task(settings, runtime, pipeline, build_model)
    hparams = run_record.hparams(settings, task.api, pipeline)
    meter = throughput.ThroughputMeter(config.data.batch_size, start_time,
                                       input_wait=lambda: task.input_wait_s)
    write_exports = _exporter(task, config, pipeline.image_shape,
                              backend.export_options(devices.export_platforms))
    checkpointer, best = _open_checkpointer(stack, settings, task, meter, start_time,
                                            write_exports)
    step = 0 if config.output.overwrite else checkpointer.restore_latest()
    plan = _loop_plan(settings, pipeline.steps_per_epoch, task.max_pack, step)
    if _finished_already(settings, plan, step, write_exports):
      return run_record.read_results(config.output.workdir)

    # ---------------------------------------------------------------- Workdir.
    writer = _open_workdir(stack, settings, backend, plan, step, hparams)
    clock.mark("model")
    events = _open_event_log(stack, settings, step, start_time, clock)

    # ---------------------------------------------------------------- Training loop.
    # One dataset for the whole run: the next epoch is prepared while this one trains.
    task.start_training(pipeline.training_batches(step, config.loop.epochs, plan.pack), plan.pack,
                        per_process=pipeline.per_process)
    stack.callback(task.stop_training)
    profiler = profiling.ProfileWindow(config.output.profile_steps, config.output.workdir,
                                       settings.is_chief, backend.profiler())
    stack.callback(profiler.stop)
    runtime.compiling()  # The first call compiles: not counted against --worker_timeout.
    with preemption.StopRequests() as stop_requests:
      outcome = controller_lib.Controller(
          task, plan, meter, writer, checkpointer,
          progress.EpochProgress(plan.steps_per_epoch, config.loop.epochs, config.output.progress,
                                 settings.is_chief),
          stop_requests, runtime.heartbeat, profiler, best, events).run(step)

    # ---------------------------------------------------------------- Export and results.
    return _finish(settings, plan, task, pipeline, hparams, outcome, meter, writer, checkpointer,
                   start_time, clock, best, events, peak, write_exports)


def _device_plan(config: config_lib.Config) -> device_plan.DevicePlan:
  """Every device decision, made once from facts read before a framework starts its devices,
  its environment set and the plan logged; the runtime and the task follow it (docs/gpu.md)."""
  devices = device_plan.plan_run(config)
  device_plan.apply_environment(devices.environment)
  logging.info("%s\n%s", device_plan.LOG_HEADING, "\n".join(device_plan.describe(devices)))
  return devices


def _open_input(stack: contextlib.ExitStack, settings: config_lib.RunSettings,
                runtime: interface.Runtime, clock: startup.StartupClock, built: dict
                ) -> Tuple[Callable, input_pipeline.InputPipeline]:
  """The model's builder (the user's module is imported first: it fails before the data loads)
  and this worker's input pipeline, bounded as the loop reads it; from here `stack` turns
  running out of memory (of the task `built` will hold) and a tf.data service worker's error
  into one line each."""
  config = settings.config
  build_model = factory.model_builder(config.model, config.data.seed)
  clock.mark("runtime")
  pipeline = input_pipeline.make_input_pipeline(
      config.data, settings.input_index, settings.num_inputs).bounded(
          config.loop.max_steps_per_epoch, config.loop.eval_steps)
  clock.mark("data")
  runtime.heartbeat()
  stack.enter_context(_out_of_memory_reported(config, pipeline, built))
  stack.enter_context(service.worker_errors_reported(config.data.data_service))
  return build_model, pipeline


def _open_runtime(stack: contextlib.ExitStack, config: config_lib.Config,
                  backend: interface.Backend, plan: device_plan.DevicePlan
                  ) -> Tuple[interface.Runtime, Optional[mfu_lib.Peak]]:
  """Opens the backend's runtime (devices, cluster, strategy; keras.distribution on JAX) as
  `plan` says on `stack` and, on the chief, takes the workdir and checks that the run may start
  there; returns it, and on the chief the peak of one of its devices, which MFU is measured
  against."""
  runtime = stack.enter_context(backend.open_runtime(config, plan))
  settings = runtime.settings
  if settings.is_chief:
    # The one writer of the workdir from here to the end; other workers write only scratch.
    stack.enter_context(workdir_lock.locked(config.output.workdir))
    workdir_lib.check_can_start(config.output.workdir, settings.run_config(),
                                config.output.overwrite)
  # Only the chief records MFU; on a CPU its first run measures the ceiling once.
  peak = (mfu_lib.device_peak(settings.precision, backend.gpu_names()) if settings.is_chief
          else None)
  learning_rate = config.peak_learning_rate
  scaled = (f" = {config.optim.learning_rate:g} x {config.data.batch_size}/"
            f"{config_lib.LINEAR_SCALING_BATCH}" if config.optim.lr_scaling == "linear" else "")
  logging.info("Keras on %s; strategy %s with %d replica%s on %s; precision %s (%s); %s steps "
               "per loop, XLA %s; %s, peak learning rate %g%s%s.", config.runtime.backend,
               settings.strategy, settings.num_replicas,
               "" if settings.num_replicas == 1 else "s", settings.device,
               settings.precision, settings.precision_reason,
               (f"up to {settings.steps_per_loop}, about {schedule.AUTO_CALL_SECONDS:g} s of"
                if settings.calls_sized_by_time else settings.steps_per_loop),
               "on" if settings.jit_compile else "off", config.optim.optimizer, learning_rate,
               scaled, _peak_shown(peak))
  return runtime, peak


def _peak_shown(peak: Optional[mfu_lib.Peak]) -> str:
  """The start line's word on the peak MFU is measured against (nothing off the chief)."""
  if peak is None:
    return ""
  if peak.flops_per_device is None:
    return f"; MFU: {peak.source}"
  where = "a machine" if peak.per_machine else "a device"
  return f"; MFU against {_flops_per_second(peak.flops_per_device)} {where} ({peak.named})"


def _flops_per_second(flops: float) -> str:
  """1.5e11 as "150 GFLOP/s", 9.9e14 as "990 TFLOP/s"."""
  for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G")):
    if flops >= scale:
      return f"{flops / scale:,.3g} {prefix}FLOP/s"
  return f"{flops / 1e6:,.3g} MFLOP/s"


def _open_workdir(stack: contextlib.ExitStack, settings: config_lib.RunSettings,
                  backend: interface.Backend, plan: schedule.LoopPlan, step: int,
                  hparams: dict) -> summaries.RunWriter:
  """Readies the workdir for training from `step`; returns its writer, closed by `stack`.

  Called only once the input has loaded and the checkpoint is known, so bad input leaves nothing
  behind; a run with no checkpoint yet starts clean, with its config.json and HParams entry.
  """
  workdir = settings.config.output.workdir
  if settings.is_chief and step == 0:
    workdir_lib.start_afresh(workdir, settings.run_config(), settings.config.output.overwrite)
  writer = stack.enter_context(summaries.RunWriter(workdir, enabled=settings.is_chief))
  if step == 0:
    writer.run_info(run_record.hparams_entry(settings, hparams), run_record.trial_id(workdir),
                    settings.run_config(), _environment(settings, backend, plan))
  else:
    changes = (workdir_lib.record_changes(workdir, settings.run_config(), step)
               if settings.is_chief else [])
    logging.info("Resuming from step %d of %d%s.", step, plan.total_steps,
                 f" with changed settings, recorded in config.json: {', '.join(changes)}"
                 if changes else "")
  return writer


def _open_event_log(stack: contextlib.ExitStack, settings: config_lib.RunSettings, step: int,
                    start_time: float, clock: startup.StartupClock) -> events_lib.EventLog:
  """The run's event log (the chief's; closed by `stack`, which writes why the process stopped),
  opened once the workdir is ready, with this process's start and start-up phases so far."""
  events = stack.enter_context(events_lib.EventLog(settings.config.output.workdir,
                                                   enabled=settings.is_chief))
  events.process_start(step, started=start_time)
  for phase, seconds in clock.phases(None).items():
    if seconds is not None:  # first_step: the controller logs the first call's end.
      events.startup_phase(phase, seconds)
  return events


def _open_checkpointer(stack: contextlib.ExitStack, settings: config_lib.RunSettings,
                       task: interface.Task, meter: throughput.ThroughputMeter,
                       start_time: float, write_exports: Callable[[str], dict]
                       ) -> Tuple[checkpointing.Checkpointer, Optional[best_model.BestModel]]:
  """The run's checkpointer (closed by `stack`) over the task's state, and under --keep_best
  the keeper of the best model (written by `write_exports`), whose record it holds too; both
  made in the strategy's scope."""
  config = settings.config
  with task.scope():
    best = _best_model(settings, write_exports)
    checkpointer = checkpointing.Checkpointer(
        config.output.workdir, settings.is_chief, config.output.keep_checkpoints,
        this_process=lambda: {**meter.totals(), "wall_time_s": time.time() - start_time},
        **_trackables(task, best))
  stack.callback(checkpointer.close)
  return checkpointer, best


def _trackables(task: interface.Task, best: Optional[best_model.BestModel]) -> dict:
  """What the checkpoint holds besides the step: the task's state, and the best so far where
  the run keeps it."""
  return {**task.trackables(), **({"best": best} if best is not None else {})}


def _best_model(settings: config_lib.RunSettings,
                write_exports: Callable[[str], dict]) -> Optional[best_model.BestModel]:
  """The keeper of WORKDIR/best/ under --keep_best, else None."""
  config = settings.config
  if config.output.keep_best == "none":
    return None
  return best_model.BestModel(config.output.workdir, config.output.keep_best,
                              config.output.export_ema,
                              settings.is_chief, write_exports)


def _exporter(task: interface.Task, config: config_lib.Config, image_shape: Sequence[int],
              export_options: dict) -> Callable[[str], dict]:
  """The run's one way to write its exports into a folder (the final ones, --keep_best's, a
  finished run's SavedModel written later), returning their paths: the moving average's
  weights under --export_ema, else the model's; the formats --export_saved_model asks for;
  `export_options` the backend's for the platforms the device plan exports for."""

  def write_exports(folder: str) -> dict:
    swapped = (task.ema.swapped() if task.ema is not None and config.output.export_ema
               else contextlib.nullcontext())
    with swapped:
      return export.export_model(task.model, folder, image_shape, export_options,
                                 saved_model=config.output.export_saved_model)

  return write_exports


def _finished_already(settings: config_lib.RunSettings, plan: schedule.LoopPlan, step: int,
                      write_exports: Callable[[str], dict]) -> bool:
  """Whether the run in the workdir had finished all its steps, as the chief then says.

  Every worker restored the chief's step, so all leave together; a worker that went on alone
  would wait for the others in its first collective op. A run made with
  --noexport_saved_model and rerun with --export_saved_model gets its SavedModel now, from the
  restored final weights, recorded in results.json's exports and in config.json (best/ stays
  as it was written).
  """
  workdir = settings.config.output.workdir
  if step < plan.total_steps or not run_record.has_results(workdir):
    return False
  if settings.is_chief:
    exported = ""
    if settings.config.output.export_saved_model and "saved_model" not in (
        run_record.read_results(workdir).get("exports", {})):
      run_record.record_exports(workdir, write_exports(workdir))
      workdir_lib.record_changes(workdir, settings.run_config(), step)
      exported = ", without a SavedModel: wrote it now (saved_model/)"
    print(f"{workdir} already finished all {plan.total_steps} steps{exported}; add --epochs to "
          "train further.", flush=True)
  return True


def _loop_plan(settings: config_lib.RunSettings, steps_per_epoch: int, max_pack: int,
               start_step: int) -> schedule.LoopPlan:
  """The run's boundaries, with the largest pack that fits them from `start_step` on."""
  config = settings.config
  return schedule.LoopPlan(
      steps_per_epoch=steps_per_epoch, epochs=config.loop.epochs,
      log_every=config.output.log_every,
      checkpoint_every=config.output.checkpoint_every, steps_per_loop=settings.steps_per_loop,
      pack=schedule.pack_size(max_pack, start_step, steps_per_epoch, config.output.log_every,
                              config.output.checkpoint_every, config.output.profile_steps,
                              config.loop.eval_every),
      profile_steps=config.output.profile_steps, eval_every=config.loop.eval_every,
      timed=settings.calls_sized_by_time)


def _environment(settings: config_lib.RunSettings, backend: interface.Backend,
                 plan: schedule.LoopPlan) -> dict:
  """The TEXT tab's description of what the run executes on."""
  return {"tf_version": tf.__version__, "keras_version": keras.__version__,
          "backend": keras.backend.backend(), "python_version": sys.version.split()[0],
          "device": settings.device,
          "devices": backend.device_names(),
          "num_replicas": settings.num_replicas, "precision_reason": settings.precision_reason,
          "steps_per_loop": settings.steps_per_loop, "jit_compile": settings.jit_compile,
          "steps_per_xla_call": plan.pack}


def _finish(settings: config_lib.RunSettings, plan: schedule.LoopPlan, task: interface.Task,
            pipeline: input_pipeline.InputPipeline, hparams: dict,
            outcome: controller_lib.Outcome, meter: throughput.ThroughputMeter,
            writer: summaries.RunWriter, checkpointer: checkpointing.Checkpointer,
            start_time: float, clock: startup.StartupClock,
            best: Optional[best_model.BestModel], events: events_lib.EventLog,
            peak: Optional[mfu_lib.Peak], write_exports: Callable[[str], dict]) -> dict:
  """Records the run: on the chief the exports, its goodput and MFU, the final scalars and
  results.json."""
  config = settings.config
  weights_digest = task.weights_sha256()
  totals = checkpointer.totals()  # Over every process that trained the run.
  if settings.task:
    # Every worker logs this; replicas in sync end with the same weights, hence the same digest.
    logging.info("%s: final train loss %.6f, weights sha256 %s", settings.task,
                 outcome.train_loss, weights_digest)
  results = run_record.RunResults(
      **hparams, image_shape=list(pipeline.image_shape), num_classes=pipeline.num_classes,
      data_sharding=pipeline.sharding,
      from_logits=task.from_logits, epochs=config.loop.epochs, params=task.model.count_params(),
      steps=outcome.step, steps_per_epoch=plan.steps_per_epoch,
      steps_per_loop=settings.steps_per_loop, steps_per_xla_call=plan.pack,
      jit_compile=settings.jit_compile, tf_version=tf.__version__,
      keras_version=keras.__version__, test_accuracy=outcome.test_accuracy,
      test_loss=outcome.test_loss, test_examples=task.test_examples,
      test_split_examples=task.test_split_examples,
      train_loss=outcome.train_loss,
      weights_sha256=weights_digest,
      # A run of one call has nothing timed apart from compiling: its rate over that call.
      examples_per_sec=(totals["timed_examples"] / totals["timed_seconds"]
                        if totals["timed_seconds"] else meter.untimed_examples_per_sec()),
      examples_per_sec_windows=meter.window_rates,
      input_wait_share=(min(1.0, totals["input_wait_s"] / totals["timed_seconds"])
                        if totals["timed_seconds"] else 0.0),
      time_to_first_step_s=totals["time_to_first_step_s"],
      startup_s=clock.phases(meter.time_to_first_step_s),
      wall_time_s=totals["wall_time_s"], processes=totals["processes"],
      recipe=run_record.recipe(config, plan.steps_per_epoch),
      test_accuracy_ema=outcome.evaluation.get("accuracy_ema"),
      test_loss_ema=outcome.evaluation.get("loss_ema"),
      ema_weights_sha256=task.ema_weights_sha256(),
      skipped_steps=task.skipped_steps, loss_scale=task.loss_scale,
      **(best.results() if best else {}))
  if settings.is_chief:
    exports = write_exports(config.output.workdir)
    flops_per_step = _training_flops(task, pipeline.image_shape)
    events.stop("finished")  # The end of the run's wall time: what follows takes milliseconds.
    results = dataclasses.replace(results, exports=exports,
                                  **_goodput_and_mfu(settings, events, flops_per_step, peak))
    writer.scalars("run", outcome.step, _final_scalars(results))
    run_record.write_results(config.output.workdir, results)
    advice = throughput.input_bound_advice(results.input_wait_share, config.data.data_service)
    if advice:  # Just above the summary block, which stays the last lines.
      print(advice, flush=True)
    print(_summary(settings, task.api, results, untimed=not totals["timed_seconds"]), flush=True)
  return results.to_dict()


def _training_flops(task: interface.Task, image_shape) -> Optional[int]:
  """A training step's FLOPs (the task counts them from its HLO); None, with a warning, for a
  step that cannot be counted: MFU is then left out, and the rest of the record stays."""
  try:
    return task.training_flops_per_step(image_shape)
  except Exception as e:  # pylint: disable=broad-except
    # A user's layer that XLA cannot express fails in many ways; none of them is the run's.
    logging.warning("MFU is left out: the training step's FLOPs could not be counted (%s: %s).",
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    return None


def _goodput_and_mfu(settings: config_lib.RunSettings, events: events_lib.EventLog,
                     flops_per_step: Optional[int], peak: mfu_lib.Peak) -> dict:
  """results.json's goodput and MFU fields from the run's event log, with `processes` and
  `wall_time_s` counted from it too: every process it holds, and their lives without the
  gaps between them."""
  figures = goodput_lib.goodput(events_lib.read_events(events.path))
  devices = settings.hosts if peak.per_machine else settings.num_replicas  # A GPU a replica.
  return {"goodput": figures, "processes": figures["processes"],
          "wall_time_s": figures["wall_s"] - figures["between_processes_s"],
          "flops_per_step": flops_per_step,
          **mfu_lib.mfu(flops_per_step, figures["productive_steps"], figures["productive_s"],
                        peak, devices)}


def _final_scalars(results: run_record.RunResults) -> Dict[str, float]:
  """The run's last scalars in TensorBoard (the HParams entry's metrics): test accuracy,
  examples/s, MFU, and under goodput/ each part of the wall time and the fraction kept."""
  scalars = {"test_accuracy": results.test_accuracy,
             "examples_per_sec": results.examples_per_sec}
  if results.mfu is not None:
    scalars["mfu"] = results.mfu
  scalars.update({f"goodput/{name}": value for name, value in results.goodput.items()})
  return scalars


def _summary(settings: config_lib.RunSettings, api: str, results: run_record.RunResults,
             untimed: bool = False) -> str:
  """The block printed when a run ends: what ran, what it reached, where it all is."""
  config = settings.config
  first_step = ("" if results.time_to_first_step_s is None
                else f", {results.time_to_first_step_s:.1f} s of it before the first step")
  if untimed and results.examples_per_sec:
    first_step += (" (examples/s over its one, compiling call: too short to time a call "
                   "apart)")
  resumed = (f" over {results.processes} processes" if results.processes > 1 else "")
  return "\n".join([
      f"Done: {run_record.model_label(config.model.name, api)} on {settings.strategy} "
      f"x{settings.num_replicas} ({settings.precision}, {settings.device})",
      f"  test accuracy {results.test_accuracy:.4f}, loss {results.test_loss:.4f} "
      f"({_test_examples_covered(results)})",
      f"  {results.examples_per_sec:,.0f} examples/s, {results.wall_time_s:.1f} s{resumed}"
      f"{first_step}",
      *_goodput_line(results),
      *_mfu_line(results),
      *_loss_scaling_line(results),
      f"  {config.output.workdir}: results.json, model.keras"
      f"{', saved_model/' if 'saved_model' in results.exports else ''}; "
      f"tensorboard --logdir {config.output.workdir}"])


def _test_examples_covered(results: run_record.RunResults) -> str:
  """What the summary's test figures cover: "all 10,000 test examples", or "the first 512 of
  10,000 test examples" under --num_test_examples."""
  if results.test_examples == results.test_split_examples:
    return f"all {results.test_examples:,} test examples"
  return f"the first {results.test_examples:,} of {results.test_split_examples:,} test examples"


# How the summary names goodput's parts.
_PART_NAMES = {"startup_s": "start-up", "compile_s": "compiling", "input_wait_s": "input wait",
               "checkpoint_s": "checkpoints", "evaluation_s": "evaluation",
               "between_processes_s": "between processes", "other_s": "other work"}


def _goodput_line(results: run_record.RunResults) -> List[str]:
  """The summary's goodput: the share of the wall time in kept steps, what was lost, and the
  biggest of the other parts."""
  figures = results.goodput
  if not figures:
    return []
  lost = (f", {figures['lost_s']:.1f} s lost ({errors.plural(figures['lost_steps'], 'step')} "
          "trained again)" if figures["lost_steps"] else ", nothing lost")
  biggest = max(_PART_NAMES, key=lambda part: figures[part])
  return [f"  goodput {figures['fraction']:.0%}: {figures['productive_s']:.1f} s of "
          f"{figures['wall_s']:.1f} s in steps kept{lost}; the most of the rest: "
          f"{_PART_NAMES[biggest]}, {figures[biggest]:.1f} s"]


def _mfu_line(results: run_record.RunResults) -> List[str]:
  """The summary's MFU and the peak it is measured against, or why there is none."""
  if results.peak_source is None:
    return []
  if results.mfu is None:
    if results.peak_flops is None:
      why = results.peak_source.split(" (", 1)[0]
    elif results.flops_per_step is None:
      why = "the step's FLOPs could not be counted (see the warning above)"
    else:
      why = "no step of the run was kept"
    return [f"  MFU unknown: {why}"]
  return [f"  MFU {results.mfu:.1%} of {_flops_per_second(results.peak_flops)}, the "
          f"{results.peak_source.split(' (', 1)[0]}"]


def _loss_scaling_line(results: run_record.RunResults) -> List[str]:
  """The summary's line on float16 loss scaling, where the run used it."""
  if results.loss_scale is None:
    return []
  skipped = results.skipped_steps
  return [f"  {skipped} of {results.steps} updates skipped for a float16 gradient overflow "
          f"(normal while the loss scale settles; it is {results.loss_scale:g} now)"]


@contextlib.contextmanager
def _out_of_memory_reported(config: config_lib.Config, pipeline: input_pipeline.InputPipeline,
                            built: dict) -> Iterator[None]:
  """Turns running out of memory (building the model, or in a step) into a UserError that says
  how large the model and the batch were, and what to lower."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    if not errors.is_out_of_memory(e):
      raise
    if "task" in built:
      params = built["task"].model.count_params()
    else:
      params = factory.parameter_count(config.model, pipeline.image_shape, pipeline.num_classes)
    model = (f"the model ({params:,} parameters)" if params
             else f"the model ({config.model.name})")
    allocation = re.search(r"OOM when allocating tensor with shape\[[^\]]*\]|"
                           r"Out of memory while trying to allocate \d+ bytes", str(e))
    detail = allocation.group(0) if allocation else type(e).__name__
    raise errors.UserError(
        f"Out of memory: {model} with --batch_size={config.data.batch_size} does not fit in "
        f"this machine's memory ({detail}). Use a smaller --batch_size or a smaller model"
        + (" (--hidden_units)" if config.model.name in ("mlp", "cnn") else "") + ".") from None

