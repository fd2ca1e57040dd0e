"""The record of a run: one schema for results.json, the HParams entry and what compare reads.

`RunResults` is that schema, one key per fact (docs/benchmarking.md's "results.json" section lists
every field; a test keeps the two in step). Its first fields, `HPARAMS`, describe what ran and are
written to TensorBoard's HParams entry when a run starts; the rest are known when it ends.
"""

import dataclasses
import os
from typing import Dict, List, Optional

from trainer import config as config_lib
from trainer import errors
from trainer import safe_files
from trainer.records import workdir as workdir_lib

# 2 added model, image_shape, num_classes, from_logits and processes; 3 added startup_s; 4 added
# data_sharding; 5 added recipe, the moving average's and the best model's fields; 6 added
# test_examples, input_wait_share, skipped_steps and loss_scale; 7 added backend; 8 added
# test_split_examples (--num_test_examples can bound the last evaluation on any data); 9 added
# goodput, flops_per_step, mfu, peak_flops and peak_source, and counts processes and wall_time_s
# from the event log (a process killed before its first checkpoint counts).
SCHEMA_VERSION = 9
RESULTS_FILE = workdir_lib.RESULTS_FILE

# What ran: results.json's first fields, and the keys compare groups runs by (with seed). The
# HParams entry holds these and every other setting that can differ (hparams_entry).
HPARAMS = ("model", "api", "backend", "strategy", "num_replicas", "precision", "device",
           "global_batch_size", "dataset", "hidden_units", "seed")


@dataclasses.dataclass(frozen=True)
class RunResults:
  """Every field of results.json."""

  # What ran (HPARAMS).
  model: str
  api: str
  backend: str  # The Keras backend: tensorflow or jax.
  strategy: str
  num_replicas: int
  precision: str
  device: str
  global_batch_size: int
  dataset: str
  hidden_units: int
  seed: int
  # What it learnt: the data's shapes, and whether the model ends in logits.
  image_shape: List[int]
  num_classes: int
  from_logits: bool
  data_sharding: str  # How workers shared the training data: none, data or file.
  # How it ran.
  epochs: int
  params: int
  steps: int
  steps_per_epoch: int
  steps_per_loop: int
  steps_per_xla_call: int
  jit_compile: bool
  tf_version: str
  keras_version: str
  # What it reached.
  test_accuracy: float
  test_loss: float
  train_loss: Optional[float]
  weights_sha256: str
  examples_per_sec: float
  examples_per_sec_windows: List[float]
  # Of the timed seconds, the share the loop waited for its next batch (input-bound above 0.1).
  input_wait_share: float
  time_to_first_step_s: Optional[float]
  startup_s: Dict[str, Optional[float]]  # startup.PHASES: where time_to_first_step_s went.
  wall_time_s: float
  processes: int
  # How it learnt: the optimisation settings, the warm-up in steps (see `recipe`).
  recipe: Dict[str, object] = dataclasses.field(default_factory=dict)
  # What test_accuracy and test_loss cover: the first test_examples of the test split's
  # test_split_examples (all of them unless --num_test_examples bounds the last evaluation).
  test_examples: Optional[int] = None
  test_split_examples: Optional[int] = None
  # --ema_decay: the moving average's figures at the end; --keep_best: the best evaluation's.
  test_accuracy_ema: Optional[float] = None
  test_loss_ema: Optional[float] = None
  ema_weights_sha256: Optional[str] = None
  best_step: Optional[int] = None
  best_test_accuracy: Optional[float] = None
  best_test_loss: Optional[float] = None
  # Updates skipped for a non-finite gradient (float16 loss scaling), and the scale at the end.
  skipped_steps: int = 0
  loss_scale: Optional[float] = None
  # Where the run's wall time went, over every process (records.goodput, from events.jsonl).
  goodput: Optional[Dict[str, float]] = None
  # Model FLOPs utilisation (records.mfu): a step's training FLOPs over the global batch, the
  # kept steps' FLOP/s over the peak of all the run's devices, that peak and where it is from.
  flops_per_step: Optional[int] = None
  mfu: Optional[float] = None
  peak_flops: Optional[float] = None
  peak_source: Optional[str] = None
  exports: Dict[str, str] = dataclasses.field(default_factory=dict)
  schema_version: int = SCHEMA_VERSION

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


FIELDS = tuple(field.name for field in dataclasses.fields(RunResults))


def hparams(settings: config_lib.RunSettings, api: str, pipeline) -> dict:
  """The HPARAMS of a run, known once its model is built: `api` as built or detected, the
  dataset's name from its input_pipeline.InputPipeline."""
  config = settings.config
  return {"model": config.model.name, "api": api, "backend": config.runtime.backend,
          "strategy": settings.strategy,
          "num_replicas": settings.num_replicas, "precision": settings.precision,
          "device": settings.device, "global_batch_size": config.data.batch_size,
          "dataset": pipeline.name, "hidden_units": config.model.hidden_units,
          "seed": config.data.seed}


RECIPE = ("optimizer", "momentum", "nesterov", "weight_decay", "learning_rate", "lr_scaling",
          "warmup_steps", "lr_schedule", "lr_drops", "label_smoothing", "clip_norm",
          "grad_accum_steps", "ema_decay", "export_ema", "keep_best", "augment", "eval_crop",
          "normalize", "eval_every", "eval_steps")


def recipe(config: config_lib.Config, steps_per_epoch: int) -> Dict[str, object]:
  """results.json's `recipe`: the RECIPE settings of `config`, with the peak learning rate
  (after --lr_scaling) and the warm-up in steps (after --warmup_epochs)."""
  flat = config.to_flags()
  values = {name: flat[name] for name in RECIPE}
  values["lr_drops"] = list(config.optim.lr_drops)
  values["learning_rate"] = config.peak_learning_rate
  values["warmup_steps"] = config.optim.warmup_steps or config.optim.warmup_epochs * steps_per_epoch
  return values


# Settings that say where or how a run writes, not what it computes: left out of the HParams
# entry, where they would only add columns that differ between every two runs.
_NOT_HPARAMS = ("workdir", "overwrite", "progress", "log_every", "checkpoint_every",
                "gpu_memory_growth", "keep_checkpoints", "export_saved_model", "profile_steps",
                "worker_hosts", "task_index", "worker_timeout", "tfds_data_dir", "data_dir",
                "memory_limit_mb")
# HPARAMS that follow from others (the strategy and the devices): results.json's, not HParams'.
_DERIVED = ("num_replicas",)


def hparams_entry(settings: config_lib.RunSettings, hparams: dict) -> dict:
  """TensorBoard's HParams entry of a run: what the user chose, every setting that can differ
  between runs, with `hparams` (the strategy and precision resolved, the device).

  Settings the harness derives from those choices (num_replicas, jit_compile and steps_per_loop
  resolved) stay out: the HPARAMS table ticks the first five differing columns by name, and
  num_replicas or jit_compile would push strategy and seed off the screen. They are in the TEXT
  tab's environment and in results.json.

  Numbers are written as text: the HPARAMS table prints a number with 5 significant digits, so
  a batch of 64 would read 64.000 and a learning rate of 0.001 0.0010000. Lists become text.
  """
  config = settings.config
  entry = {name: value for name, value in config.to_flags().items()
           if name not in _NOT_HPARAMS and name != "batch_size"}
  entry.update({name: value for name, value in hparams.items() if name not in _DERIVED})
  entry["steps_per_loop"] = config.loop.steps_per_loop or None  # 0 is auto.
  shown = {}
  for name, value in sorted(entry.items()):
    if isinstance(value, bool):
      shown[name] = value
    elif value is None:
      shown[name] = "auto"
    elif isinstance(value, (int, float)):
      shown[name] = repr(value)
    elif isinstance(value, (list, tuple)):
      shown[name] = ",".join(str(item) for item in value) or "-"
    else:
      shown[name] = str(value)
  return shown


def trial_id(workdir: str) -> str:
  """The HPARAMS table's name for a run: its folder's name first, then where it is.

  The table's Trial ID column shows about 16 characters, so the run's own name ("functional-s0")
  must come first; the parent folder keeps two runs of the same name in different folders apart
  (TensorBoard averages runs that share a trial id into one row).
  """
  path = os.path.abspath(workdir)
  return f"{os.path.basename(path)} ({os.path.dirname(path)})"


def model_label(model: str, api: str) -> str:
  """How reports name what ran: "functional", "cnn (subclass)", "nets.py:build (subclass)"."""
  return api if model == "mlp" else f"{model} ({api})"


def write_results(workdir: str, results: RunResults) -> str:
  """Writes workdir/results.json through a rename, so a reader never sees half of it."""
  path = os.path.join(workdir, RESULTS_FILE)
  safe_files.write_json(path, results.to_dict())
  return path


def has_results(workdir: str) -> bool:
  """True when the run in `workdir` finished and wrote its results.json."""
  return os.path.isfile(os.path.join(workdir, RESULTS_FILE))


def record_exports(workdir: str, exports: Dict[str, str]) -> None:
  """Replaces the exports of a finished run's results.json (a later export), the rest kept."""
  safe_files.write_json(os.path.join(workdir, RESULTS_FILE),
                        {**read_results(workdir), "exports": exports})


def read_results(workdir: str) -> dict:
  """Returns the results.json of the run in `workdir` as a dict of RunResults fields."""
  results = safe_files.read_json(os.path.join(workdir, RESULTS_FILE))
  if results is None:
    raise errors.UserError(f"{workdir} holds no {RESULTS_FILE}: the run has not finished.")
  return results
