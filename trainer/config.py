"""The immutable run configuration that trainer.main builds from flags and passes down."""

import dataclasses
from typing import Optional, Tuple

# The choices of the enum flags; the modules that act on them validate against these.
APIS = ("sequential", "functional", "subclass")
DATASETS = ("mnist", "fashion_mnist", "synthetic")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker_mirrored")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run needs; library code reads this, never absl flags."""

  # Model.
  api: str = "functional"
  hidden_units: int = 256
  # Data.
  dataset: str = "mnist"
  data_dir: Optional[str] = None  # Folder of the four IDX files; None reads through tfds.
  tfds_data_dir: Optional[str] = None  # tfds cache folder; None is tfds's own default.
  # Optimisation.
  epochs: int = 10
  batch_size: int = 32  # Global: split across every replica of every worker.
  learning_rate: float = 1e-3
  seed: int = 0
  max_steps_per_epoch: int = 0  # 0 trains on the whole training split each epoch.
  # Hardware.
  strategy: str = "auto"
  cpu_devices: int = 1
  precision: str = "auto"
  # Multi-worker: the cluster comes from TF_CONFIG unless worker_hosts is given.
  worker_hosts: Tuple[str, ...] = ()
  task_index: int = 0
  worker_timeout: float = 120.0  # Seconds without progress before a worker gives up on its peers.
  steps_per_loop: int = 0  # 0 chooses automatically.
  jit_compile: Optional[bool] = None  # None chooses automatically.
  # Output.
  workdir: str = "runs/default"
  log_every: int = 100
  checkpoint_every: int = 1000  # Steps between checkpoints (also one at every epoch's end).
  keep_checkpoints: int = 3
  overwrite: bool = False
  deterministic: bool = False  # Op determinism: a resumed run ends bit-identical.

  def replace(self, **changes) -> "Config":
    """Returns a copy with `changes` applied."""
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    """Returns the config as a plain, JSON-ready dict."""
    return dataclasses.asdict(self)
