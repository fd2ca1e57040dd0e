"""Every setting of a run, declared once with its help text, and what it resolves to on a machine.

`Config` is what the user chose: one field per flag of trainer.main, whose default and help text
the flag takes from here. `RunSettings` is that Config resolved against the machine and cluster
(the strategy behind auto, the replica count, the dtype policy, steps per loop, XLA): the one
frozen object the rest of a run reads.
"""

import dataclasses
import os
from typing import Optional, Tuple

# The choices of the enum flags; the modules that act on them validate against these.
APIS = ("sequential", "functional", "subclass")
DATASETS = ("mnist", "fashion_mnist", "synthetic")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker_mirrored")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")

AUTO_STEPS_PER_LOOP = 100  # Measured no faster beyond 100 on a 2-core CPU.


def _setting(default, help_text: str):
  return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a user chooses for a run; library code reads this, never absl flags."""

  # Model.
  api: str = _setting("functional", "Keras API that builds the model.")
  hidden_units: int = _setting(256, "Width of the hidden Dense layer.")
  # Data.
  dataset: str = _setting(
      "mnist", "mnist and fashion_mnist read through tensorflow-datasets, or from --data_dir; "
      "synthetic is random data of MNIST's shapes made inside tf.data.")
  data_dir: Optional[str] = _setting(
      None, "Folder with the four MNIST-format IDX files (train-images-idx3-ubyte.gz, ...), "
      "read instead of tensorflow-datasets; works offline.")
  tfds_data_dir: Optional[str] = _setting(
      None, "tensorflow-datasets cache folder (default: tfds's).")
  # Optimisation.
  epochs: int = _setting(10, "Passes over the training split.")
  batch_size: int = _setting(32, "GLOBAL batch size: split across all replicas of all workers.")
  learning_rate: float = _setting(1e-3, "Adam learning rate.")
  seed: int = _setting(0, "Seed of the initial weights and the data order.")
  max_steps_per_epoch: int = _setting(
      0, "Cut each epoch to at most this many steps; 0 is the whole split.")
  # Hardware.
  strategy: str = _setting(
      "auto", "tf.distribute strategy; auto is mirrored over several devices, one_device on "
      "one GPU, default on CPU. multi_worker_mirrored spans hosts (TF_CONFIG).")
  cpu_devices: int = _setting(
      1, "Split the host CPU into this many logical devices, so mirrored runs that many "
      "replicas without a GPU.")
  precision: str = _setting(
      "auto", "Keras dtype policy; auto is mixed_float16 on GPUs of compute capability >= 7.0, "
      "float32 otherwise.")
  # Multi-worker: the cluster comes from TF_CONFIG unless worker_hosts is given.
  worker_hosts: Tuple[str, ...] = _setting(
      (), "With --strategy=multi_worker_mirrored: host:port of every worker, the same list on "
      "each; builds TF_CONFIG. Unset reads TF_CONFIG from the environment.")
  task_index: int = _setting(0, "This worker's index in --worker_hosts.")
  worker_timeout: float = _setting(
      120.0, "Multi-worker: seconds without progress (a peer that never starts or dies) before "
      "this worker stops (exit 3, or 137 from its watchdog).")
  steps_per_loop: int = _setting(
      0, "Training steps per tf.function call; 0 chooses automatically.")
  jit_compile: Optional[bool] = _setting(
      None, "Compile the training step with XLA; unset chooses automatically.")
  # Output.
  workdir: Optional[str] = _setting(
      None, "Folder for TensorBoard events and results.json; default "
      "runs/<dataset>-<api>-<strategy>.")
  log_every: int = _setting(100, "Write training scalars every this many steps.")
  checkpoint_every: int = _setting(
      1000, "Save a checkpoint every this many steps (and at every epoch's end); 0 saves only "
      "at epoch ends.")
  keep_checkpoints: int = _setting(3, "How many recent checkpoints to keep.")
  overwrite: bool = _setting(
      False, "Delete the run in --workdir and start afresh, instead of resuming it.")
  deterministic: bool = _setting(
      False, "Turn on TensorFlow op determinism: the same run gives bit-identical weights, "
      "also across a kill and resume. Slower on GPUs.")

  def __post_init__(self):
    if self.workdir is None:
      object.__setattr__(self, "workdir", os.path.join(
          "runs", f"{self.dataset}-{self.api}-{self.strategy}"))

  def replace(self, **changes) -> "Config":
    """Returns a copy with `changes` applied."""
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    """Returns the config as a plain, JSON-ready dict."""
    return dataclasses.asdict(self)


SETTINGS = {field.name: field for field in dataclasses.fields(Config)}


def default(name: str):
  """Returns the default of the setting `name`."""
  return SETTINGS[name].default


def help_text(name: str) -> str:
  """Returns the help text of the setting `name`."""
  return SETTINGS[name].metadata["help"]


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """A Config resolved against this machine and cluster: what the run really does."""

  config: Config
  strategy: str  # The strategy's name, auto resolved.
  num_replicas: int
  precision: str  # The Keras dtype policy, auto resolved.
  precision_reason: str
  device: str  # e.g. "CPU: AMD EPYC x2 cores".
  is_chief: bool  # The one process that writes logs, checkpoints, exports and results.
  task: Optional[str] = None  # e.g. "worker 1 of 2 (127.0.0.1:2223)"; None on one host.

  @property
  def steps_per_loop(self) -> int:
    return self.config.steps_per_loop or AUTO_STEPS_PER_LOOP

  @property
  def jit_compile(self) -> bool:
    # Several replicas compile only forward and backward (see trainer.task); one compiles all.
    if self.config.jit_compile is not None:
      return self.config.jit_compile
    return self.num_replicas == 1

  def run_config(self) -> dict:
    """config.json: the user's settings with the strategy, precision and replicas resolved."""
    return {**self.config.to_dict(), "strategy": self.strategy, "precision": self.precision,
            "num_replicas": self.num_replicas}
