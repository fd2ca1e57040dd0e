"""What the loop, the records and the benchmark see of a Keras backend: one interface, one home
per backend (trainer/backends/tensorflow/, trainer/backends/jax/), chosen once by `get`.

`Backend` opens the run's devices (`open_runtime`, following the device plan), makes the task
(`make_task`), and names what else differs: the profiler, the devices' names, how a process
leaves its cluster, what an out-of-memory error looks like. `Task` is the seam the controller
drives. `TaskPolicy` holds what both tasks decide alike, once: the moving average's evaluation
beside the weights', the stop every worker agrees on, the training figures reported.
`DeviceRules` is a backend's part of the device plan (`device_rules`, importing no framework),
which trainer/distribute/device_plan.py composes with the decisions every backend shares.
"""

import importlib
import signal
import threading
from typing import (Any, Callable, ContextManager, Dict, List, Optional, Protocol, Sequence,
                    Tuple)

from trainer import config as config_lib
from trainer.distribute import memory_estimate
from trainer.distribute import plan_inputs

ALL_BATCHES = 2**62  # One evaluation call that runs to the end of the test split.


class Runtime(Protocol):
  """A run's devices and cluster, opened: what its config resolved to, and its heartbeat."""

  settings: config_lib.RunSettings
  heartbeat: Callable[[], None]  # Call at every sign of progress; a no-op on one host.
  compiling: Callable[[], None]  # Call before the first call: the watchdog gives it longer.


class Task(Protocol):
  """The learning problem: model, optimizer, compiled training and evaluation steps."""

  model: Any  # The keras.Model.
  api: str
  from_logits: bool
  ema: Any  # The weights' moving average (with `swapped()`), or None.
  input_wait_s: float
  test_examples: int
  test_split_examples: int

  def start_training(self, dataset, pack: int, per_process: bool = False) -> None: ...
  def stop_training(self) -> None: ...  # Drops the training iterator (TaskPolicy's).
  def train_loop(self, num_steps: int) -> int: ...
  def train_metrics(self) -> Dict[str, float]: ...
  def reset_train_metrics(self) -> None: ...
  def evaluate(self, next_chunk: Optional[Callable[[int], int]] = None,
               whole_split: bool = False) -> Optional[Dict[str, float]]: ...
  def agreed_stop(self, local_signal: int) -> Tuple[int, bool]: ...
  def weights_sha256(self) -> str: ...
  def ema_weights_sha256(self) -> Optional[str]: ...
  def training_flops_per_step(self, image_shape: Sequence[int]) -> int: ...
  def scope(self) -> ContextManager: ...
  def trackables(self) -> dict: ...
  @property
  def max_pack(self) -> int: ...
  @property
  def loss_scale(self) -> Optional[float]: ...
  @property
  def skipped_steps(self) -> int: ...


class Backend(Protocol):
  """One Keras backend's implementation of a run's device-dependent parts."""

  name: str

  def open_runtime(self, config: config_lib.Config, plan) -> ContextManager[Runtime]: ...
  def make_task(self, settings: config_lib.RunSettings, runtime: Runtime, pipeline,
                build_model) -> Task: ...
  def profiler(self) -> Tuple[Callable[[str], None], Callable[[], None]]: ...
  def device_names(self) -> List[str]: ...
  def gpu_names(self) -> List[str]: ...  # The GPUs it trains on, by name (MFU's peak).
  def leave_cluster(self, runtime: config_lib.RuntimeConfig) -> None: ...
  def export_options(self, platforms: Sequence[str]) -> dict: ...


class DeviceRules(Protocol):
  """One backend's device decisions where the backends differ, each a pure function of device
  facts and the run's settings. distribute/device_plan composes them with what every backend
  decides alike (GPUs each worker takes, replicas and per-replica batch, precision on GPUs,
  the all-reduce between GPUs, memory, the host bytes a pack may stack). A rules module imports
  no framework: the plan is made before TensorFlow or JAX starts its devices."""

  cuda_missing: str  # Why this backend cannot use the GPUs it sees, and what to install.

  def can_use_gpus(self, facts: plan_inputs.DeviceFacts) -> bool: ...
  def check_gpus_shared(self, workers_per_host: int, gpus: int) -> None: ...
  def one_device_strategy(self, on_gpu: bool) -> str: ...  # auto's on one device.
  def compiles_with_xla(self, request: plan_inputs.PlanRequest, num_replicas: int) -> bool: ...
  def cpu_precision(self, facts: plan_inputs.DeviceFacts,
                    request: plan_inputs.PlanRequest) -> Tuple[str, str]: ...
  def check_on_gpus(self, request: plan_inputs.PlanRequest,
                    footprint: memory_estimate.ModelFootprint, xla: bool,
                    num_replicas: int) -> None: ...
  def environment(self, request: plan_inputs.PlanRequest, on_gpu: bool,
                  local_devices: int) -> Dict[str, str]: ...
  def cpu_collective(self, workers: int) -> str: ...
  def pack_limit(self, footprint: memory_estimate.ModelFootprint, on_gpu: bool, xla: bool,
                 num_replicas: int, strategy: str, batch_bytes: int) -> int: ...


def get(name: str) -> Backend:
  """The backend called `name` (one of config.BACKENDS): the one place that picks one, importing
  only its own framework's code."""
  return _backend_module(name, "backend").BACKEND


def device_rules(name: str) -> DeviceRules:
  """The device rules of the backend called `name`, importing no framework (the device plan's)."""
  return _backend_module(name, "device_rules").RULES


def _backend_module(name: str, module: str):
  if name not in config_lib.BACKENDS:
    raise ValueError(f"Unknown backend {name!r}; expected one of {', '.join(config_lib.BACKENDS)}.")
  return importlib.import_module(f"trainer.backends.{name}.{module}")


class TaskPolicy:
  """What both tasks decide alike, written once: a task subclasses it and supplies
  `_evaluate_weights(dataset, next_chunk)`, `_count_stop_requests(flag)` and
  `_train_figures()`, with `_settings`, `ema`, `_eval_dataset`, `_whole_split` and `_iterator`
  (the training batches' tf.data iterator) set."""

  def stop_training(self) -> None:
    """Drops the training iterator as the run ends, with its prefetched batches, and destroys it
    on a thread of its own, which nothing waits for.

    Left to a later garbage collection (a task lives in reference cycles), that destruction came
    at any moment in a process that trains again (a notebook, the suite), and it waits for the
    iterator's autotuning thread: now and then (a race inside tf.data) until that thread's next
    optimisation is due, up to a minute for an iterator as old as a run's.
    """
    doomed = [self._iterator]
    self._iterator = None
    threading.Thread(target=doomed.clear, name="tf.data-release", daemon=True).start()

  def evaluate(self, next_chunk: Optional[Callable[[int], int]] = None,
               whole_split: bool = False) -> Optional[Dict[str, float]]:
    """The loss and accuracy on the test split (its --eval_steps part, unless `whole_split`),
    and with --ema_decay the same of the moving average's weights (loss_ema, accuracy_ema).

    The test batches run in compiled chunks: `next_chunk(batches_done)` says how many batches
    the next one runs, or 0 to abandon the evaluation (a stop request), which then returns
    None. Without it (and under multi_worker_mirrored, whose workers must run the same calls)
    one call runs them all.
    """
    if next_chunk is None or self._settings.strategy == "multi_worker_mirrored":
      next_chunk = lambda batches_done: ALL_BATCHES
    dataset = self._eval_dataset
    if whole_split and self._whole_split is not None:
      dataset = self._whole_split
    figures = self._evaluate_weights(dataset, next_chunk)
    if figures is None or self.ema is None:
      return figures
    with self.ema.swapped():
      averaged = self._evaluate_weights(dataset, next_chunk)
    if averaged is None:
      return None
    figures.update({f"{name}_ema": value for name, value in averaged.items()})
    return figures

  def agreed_stop(self, local_signal: int) -> Tuple[int, bool]:
    """Whether any worker was asked to stop: (signal number, whether it reached this process).

    Under multi_worker_mirrored every worker calls this at the same loop boundary and one small
    collective tells them all, so a SIGTERM to any one worker (how preemption arrives) makes
    every worker save the same step and stop, as TensorFlow's PreemptionCheckpointHandler
    guarantees. A worker that got no signal itself stops as if by SIGTERM.
    """
    if self._settings.strategy != "multi_worker_mirrored":
      return local_signal, bool(local_signal)
    if not self._count_stop_requests(1 if local_signal else 0):
      return 0, False
    return (local_signal or signal.SIGTERM), bool(local_signal)

  def train_metrics(self) -> Dict[str, float]:
    """The training loss and accuracy since the last reset, the learning rate now, under
    --clip_norm the mean gradient norm before clipping, and under loss scaling the scale now
    and the updates skipped so far for a non-finite gradient."""
    loss, accuracy, learning_rate, gradient_norm = self._train_figures()
    metrics = {"loss": loss, "accuracy": accuracy, "learning_rate": learning_rate}
    if self._settings.config.optim.clip_norm:
      metrics["gradient_norm"] = gradient_norm
    if self.loss_scaling:
      metrics["loss_scale"] = self.loss_scale
      metrics["skipped_steps"] = self.skipped_steps
    return metrics
