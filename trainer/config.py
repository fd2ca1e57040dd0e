"""Every setting of a run, declared once with its help text, and what it resolves to on a machine.

`Config` is what the user chose, in frozen sections by job (model, data, optim, loop, runtime,
output); each field is one flag of trainer.main, whose default and help text the flag takes from
here. The flags and config.json stay flat: `FLAG_FIELDS` maps each flag name to its section and
field, and `Config.from_flags`, `to_flags` and `replace` speak flag names. `RunSettings` is that
Config resolved against the machine and cluster (the strategy behind auto, the replica count,
the dtype policy, steps per loop, XLA): the one frozen object the rest of a run reads.
"""

import dataclasses
import os
from typing import Optional, Tuple

from trainer import errors

# The choices of the enum flags; the modules that act on them validate against these.
APIS = ("sequential", "functional", "subclass")
NETWORKS = ("mlp", "cnn", "resnet18", "resnet34", "resnet50")  # Built in, in all three APIs.
APPLICATIONS_PREFIX = "applications."  # --model=applications.NAME: a keras.applications model.
BACKENDS = ("tensorflow", "jax")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker_mirrored")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
LR_SCHEDULES = ("constant", "cosine", "linear", "step")
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCALINGS = ("none", "linear")
AUGMENTATIONS = ("none", "flip", "crop_flip")  # trainer.data.augment's.
KEEP_BEST = ("none", "accuracy", "loss")
PROGRESS = ("auto", "bar", "lines", "none")

# The most steps of an automatically sized call: longer calls measured no faster
# (docs/measurements.md).
AUTO_STEPS_PER_LOOP = 100
# From this batch on the mlp's step is large matmuls, which oneDNN runs faster than XLA's CPU
# dots (docs/measurements.md, "XLA on CPUs").
XLA_MAX_BATCH = 1024


def _setting(default, help_text: str, shown: Optional[str] = None):
  """A Config field; `shown` is what an unset default (None, 0, ()) means, for --help, when the
  harness fills it in (tests/test_config.py checks each against the code that does)."""
  return dataclasses.field(default=default, metadata={"help": help_text, "shown": shown})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Which network a run trains and how it is built."""

  name: str = _setting(
      "mlp", "mlp (the blog's network), cnn (two conv blocks), resnet18, resnet34, resnet50 "
      "(v1.5; the CIFAR stem for images up to 64 px), applications.NAME (any keras.applications "
      "model, untrained: applications.MobileNetV2), or your own: path/to/file.py:function or "
      "package.module:function, called as function(input_shape=(height, width, channels), "
      "num_classes=N) to return a keras.Model.")
  api: Optional[str] = _setting(
      None, "Keras API that builds the built-in model; your own model's and an application's "
      "API is detected.", shown="functional")
  hidden_units: int = _setting(256, "Width of the mlp's and the cnn's hidden Dense layer.")
  sync_batchnorm: bool = _setting(
      False, "BatchNorm statistics over the global batch (all replicas) instead of each "
      "replica's own share; the ResNets only.")

  def __post_init__(self):
    if brings_its_own_api(self.name) and self.api is not None:
      raise errors.UserError(
          f"--api={self.api} chooses how a built-in model is built; --model={self.name} comes "
          "built, and its API is detected. Leave --api out.")
    if not brings_its_own_api(self.name) and self.name not in NETWORKS:
      raise errors.UserError(
          f"--model={self.name} is neither a built-in model ({', '.join(NETWORKS)}), "
          f"{APPLICATIONS_PREFIX}NAME, nor your own as path/to/file.py:function or "
          "package.module:function.")
    if self.sync_batchnorm and not self.name.startswith("resnet"):
      raise errors.UserError(f"--sync_batchnorm applies to the built-in ResNets; --model="
                             f"{self.name} has its own layers. Leave it out.")
    if not brings_its_own_api(self.name) and self.api is None:
      object.__setattr__(self, "api", "functional")

  @property
  def own_model(self) -> bool:
    """True when --model names the user's own function rather than a built-in network."""
    return ":" in self.name

  @property
  def application(self) -> bool:
    """True when --model names a keras.applications model (applications.NAME)."""
    return self.name.startswith(APPLICATIONS_PREFIX)



@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the images come from and how they are batched, in what order."""

  dataset: Optional[str] = _setting(
      None, "mnist, fashion_mnist or any tensorflow-datasets image classification name "
      "(cifar10, emnist, ...); synthetic is random images made inside tf.data. Unset with "
      "--data_dir: what the folder holds.", shown="mnist")
  data_dir: Optional[str] = _setting(
      None, "Read the data from this folder instead of tensorflow-datasets, offline: the four "
      "MNIST-format IDX files (train-images-idx3-ubyte.gz, ...), TFRecord shards (train-* and "
      "validation-* or test-* files of tf.train.Example), or one subfolder of images (png, jpg) "
      "per class, optionally under train/ and test/.")
  label_offset: int = _setting(
      0, "TFRecord shards: subtracted from every label; 1 for shards whose labels start at 1 "
      "(the ImageNet converters', 0 being background).")
  tfds_data_dir: Optional[str] = _setting(
      None, "tensorflow-datasets cache folder.", shown="tfds's own: $TFDS_DATA_DIR or ~/tensorflow_datasets")
  image_size: Tuple[int, ...] = _setting(
      (), "HEIGHT,WIDTH to train on, for image folders, TFRecord shards and tfds datasets; "
      "needed when their images differ in size. Above 64 px, images not all stored at this size "
      "are held encoded and each is cropped from its original (see --augment, --eval_crop).")
  validation_split: Optional[float] = _setting(
      None, "Share of an image folder's images held out as its test split when it has no test/ "
      "subfolder; unset holds out 0.2.")
  image_shape: Tuple[int, ...] = _setting(
      (), "--dataset=synthetic: HEIGHT,WIDTH,CHANNELS of its images.", shown="28,28,1")
  num_classes: int = _setting(0, "--dataset=synthetic: its number of classes.", shown="10")
  num_test_examples: int = _setting(
      0, "The run's last evaluation (results.json, the summary) covers the first this many "
      "examples of the test split, in its order; unset covers the whole split. For "
      "--dataset=synthetic also the size of its test split.",
      shown="the whole test split (synthetic: 4 global batches)")
  augment: str = _setting(
      "none", "Training images only, in tf.data: none; flip (horizontal, p=1/2); crop_flip "
      "(up to 64 px: 4-pixel zero pad and random crop; above: a random box of the original "
      "image, area 8-100%, aspect 3/4-4/3, 10 tries then the centre crop, decoded alone for "
      "JPEG, resized; then the flip). Random choices follow (seed, epoch, step or position), "
      "so resuming stays exact.")
  eval_crop: float = _setting(
      0.875, "Images cropped from their original (see --image_size): evaluation resizes the "
      "shorter side to image size / eval_crop and takes the centre crop, keeping the aspect "
      "ratio (0.875: 256 for 224; 1.0 keeps the whole shorter side). Also training's crop "
      "without --augment=crop_flip.")
  normalize: bool = _setting(
      False, "Standardise every image by the training split's per-channel mean and std (test "
      "images alike).")
  memory_limit_mb: float = _setting(
      0.0, "Data whose decoded images need more than this many MB stream from disk at every "
      "epoch instead of being held in memory; 0 is a quarter of this machine's RAM.")
  data_service: str = _setting(
      "", "HOST:PORT of a tf.data service dispatcher (python -m trainer.data_service): the "
      "training batches are made by its workers, on other machines; evaluation stays here. "
      "Each step's batch is the one made here, but batches arrive in the order the workers "
      "finish them (not bit-identical). Empty: made here.")
  batch_size: int = _setting(32, "GLOBAL batch size: split across all replicas of all workers.")
  seed: int = _setting(0, "Seed of the initial weights and the data order.")

  def __post_init__(self):
    _make_tuples(self, "image_size", "image_shape")
    if self.dataset != "synthetic" and (self.image_shape or self.num_classes):
      raise errors.UserError(
          "--image_shape and --num_classes describe --dataset=synthetic; real data brings its "
          "own. Leave them out.")
    if self.image_shape and (len(self.image_shape) != 3 or min(self.image_shape) < 1):
      raise errors.UserError(f"--image_shape={_joined(self.image_shape)} must be "
                             "HEIGHT,WIDTH,CHANNELS, three positive integers, e.g. 32,32,3.")
    if self.image_size and (len(self.image_size) != 2 or min(self.image_size) < 1):
      raise errors.UserError(f"--image_size={_joined(self.image_size)} must be HEIGHT,WIDTH, "
                             "two positive integers, e.g. 64,64.")
    if self.data_service:
      host, _, port = self.data_service.rpartition(":")
      if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise errors.UserError(f"--data_service={self.data_service} must be HOST:PORT, the "
                               "dispatcher's (python -m trainer.data_service --dispatcher), e.g. "
                               "node1:5050.")
    if not 0 < self.eval_crop <= 1:
      raise errors.UserError(f"--eval_crop={self.eval_crop} must lie in (0, 1]: the share of "
                             "the shorter side evaluation keeps, e.g. 0.875.")
    if self.validation_split is not None and not 0 < self.validation_split < 1:
      raise errors.UserError(f"--validation_split={self.validation_split} must lie between 0 "
                             "and 1, e.g. 0.2.")
    # What the flags alone rule out; what --data_dir holds is checked by the source that reads it.
    if self.dataset == "synthetic" and (self.augment != "none" or self.normalize):
      raise errors.UserError("--augment and --normalize apply to real images; synthetic data "
                             "measures compute. Leave them out.")
    if not self.data_dir and self.validation_split is not None:
      raise errors.UserError(
          f"--validation_split applies to a folder of images, not to "
          f"--dataset={self.dataset or 'mnist'}, which has its own test split. Leave it out.")



@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """The update: optimizer, learning rate and its schedule, the loss's terms, the average."""

  optimizer: str = _setting(
      "adam", "adam, adamw (decoupled weight decay) or sgd (with --momentum, --nesterov).")
  momentum: float = _setting(0.9, "--optimizer=sgd: momentum.")
  nesterov: bool = _setting(False, "--optimizer=sgd: Nesterov momentum.")
  weight_decay: float = _setting(
      0.0, "Weight decay, never on biases or BatchNorm parameters: with sgd an L2 term of the "
      "loss (its gradient decay x weight goes through the momentum; 1e-4 is ResNet's), with "
      "adam and adamw decoupled (each update also subtracts learning rate x decay x weight).")
  learning_rate: float = _setting(
      1e-3, "The peak learning rate (after --warmup_*, before --lr_schedule decays it).")
  lr_scaling: str = _setting(
      "none", "none, or linear: --learning_rate is given for a batch of 256 and multiplied by "
      "--batch_size / 256 (Goyal et al.).")
  warmup_steps: int = _setting(
      0, "Raise the learning rate linearly from 0 to the peak over this many steps.")
  warmup_epochs: int = _setting(0, "The warm-up in epochs instead of steps.")
  lr_schedule: str = _setting(
      "constant", "After the warm-up: constant; cosine (a half cosine to 0 by the run's end); "
      "linear (to 0 by the run's end); step (x0.1 at each of --lr_drops). Resuming with more "
      "--epochs stretches the rest of the curve.")
  lr_drops: Tuple[int, ...] = _setting(
      (), "--lr_schedule=step: the epochs at whose start the learning rate drops x0.1, e.g. "
      "30,60,80.")
  label_smoothing: float = _setting(
      0.0, "Train on targets of 1 - s for the label and s / classes spread over all (0.1 is "
      "ResNet's); the test loss stays unsmoothed.")
  clip_norm: float = _setting(
      0.0, "Clip the gradient to this global norm (after the sum over replicas and "
      "accumulation steps, so every replica clips the same gradient); 0 is off. The norm "
      "before clipping is logged as train/gradient_norm.")
  grad_accum_steps: int = _setting(
      1, "Split each step's batch into this many micro-batches run one after another, their "
      "gradients summed into one update: --batch_size stays the examples per update, memory "
      "holds a micro-batch's activations. Must divide the batch of each replica. BatchNorm "
      "sees micro-batches.")
  ema_decay: float = _setting(
      0.0, "Keep an exponential moving average of the trainable weights, updated after every "
      "step with this decay (0.999, 0.9999); evaluated beside the weights at every "
      "evaluation (eval/accuracy_ema). 0 is off.")

  def __post_init__(self):
    """Refuses optimisation settings that cannot train, each with one line."""
    _make_tuples(self, "lr_drops")
    if self.weight_decay < 0:
      raise errors.UserError(f"--weight_decay={self.weight_decay} is negative; use 0 (off) or "
                             "a small positive value such as 1e-4.")
    if not 0 <= self.momentum < 1:
      raise errors.UserError(f"--momentum={self.momentum} must lie in [0, 1), e.g. 0.9.")
    if not 0 <= self.label_smoothing < 1:
      raise errors.UserError(f"--label_smoothing={self.label_smoothing} must lie in [0, 1), "
                             "e.g. 0.1.")
    if self.nesterov and self.optimizer != "sgd":
      raise errors.UserError(f"--nesterov is SGD's momentum; --optimizer={self.optimizer} has "
                             "none. Add --optimizer=sgd or leave --nesterov out.")
    if self.warmup_steps < 0 or self.warmup_epochs < 0:
      raise errors.UserError("--warmup_steps and --warmup_epochs count steps and epochs: 0 or "
                             "more.")
    if self.warmup_steps and self.warmup_epochs:
      raise errors.UserError("Give the warm-up once: --warmup_steps or --warmup_epochs.")
    if (self.lr_schedule == "step") != bool(self.lr_drops):
      raise errors.UserError("--lr_schedule=step and --lr_drops go together: the epochs at "
                             "which to drop the learning rate, e.g. --lr_drops=30,60,80.")
    if self.clip_norm < 0:
      raise errors.UserError(f"--clip_norm={self.clip_norm} is negative; use 0 (off) or a "
                             "positive norm such as 1.0.")
    if not 0 <= self.ema_decay < 1:
      raise errors.UserError(f"--ema_decay={self.ema_decay} must lie in [0, 1), e.g. 0.999.")
    if self.lr_drops and (min(self.lr_drops) < 1 or list(self.lr_drops) != sorted(
        set(self.lr_drops))):
      raise errors.UserError(f"--lr_drops={_joined(self.lr_drops)} must be increasing epochs "
                             "from 1, e.g. 30,60,80.")



@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """How long the run trains, how its steps are called, and when it evaluates."""

  epochs: int = _setting(10, "Passes over the training split.")
  max_steps_per_epoch: int = _setting(
      0, "Cut each epoch to at most this many steps; 0 is the whole split.")
  eval_steps: int = _setting(
      0, "Evaluations during training use the first this many global batches of the test "
      "split only, the same examples every time; 0 is the whole test split. The run's last "
      "evaluation (results.json, the summary) covers the whole split (see "
      "--num_test_examples).")
  eval_every: int = _setting(
      0, "Also evaluate every this many steps inside epochs (long epochs); 0 evaluates at "
      "epoch ends only.")
  steps_per_loop: int = _setting(
      0, "Training steps per compiled call; 0 (or auto) sizes each call from the measured "
      "step time to last about 1.5 s, up to 100 steps (under multi_worker_mirrored: 100 "
      "steps), so Ctrl-C and SIGTERM are acted on within seconds on any model.", shown="auto")
  jit_compile: Optional[bool] = _setting(
      None, "Compile the training step with XLA; unset is on for the mlp on one replica, off "
      "for convolutions and your own model.")

  def __post_init__(self):
    if self.eval_every < 0:
      raise errors.UserError(f"--eval_every={self.eval_every} counts steps: 0 (epoch ends "
                             "only) or more.")



@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
  """The machine and cluster a run uses: backend, strategy, devices, precision, workers."""

  backend: str = _setting(
      os.environ.get("KERAS_BACKEND", "tensorflow"),
      "Keras backend: tensorflow or jax (pip install -e '.[jax]'). Fixed before Keras loads; "
      "the strategies map to keras.distribution on jax (mirrored: DataParallel over every "
      "local device). Unset follows KERAS_BACKEND, else tensorflow.",
      shown="$KERAS_BACKEND or tensorflow")
  strategy: str = _setting(
      "auto", "tf.distribute strategy; auto is mirrored over several devices, one_device on "
      "one GPU, default on CPU. multi_worker_mirrored spans hosts (TF_CONFIG).")
  cpu_devices: int = _setting(
      1, "Split the host CPU into this many logical devices, so mirrored runs that many "
      "replicas without a GPU.")
  gpu_memory_growth: bool = _setting(
      True, "Let each process take GPU memory as it needs it, rather than all of every GPU it "
      "sees at start: workers and benchmark runs on one host can then share GPUs. "
      "--nogpu_memory_growth takes it all up front (less fragmentation on one big model).")
  precision: str = _setting(
      "auto", "Keras dtype policy. auto: on GPUs mixed_bfloat16 from compute capability 8.0, "
      "mixed_float16 (with loss scaling) on 7.x, float32 below; on CPUs with AMX-BF16 or "
      "AVX512_BF16 mixed_bfloat16 for the cnn and the ResNets, and for the mlp where its step "
      "runs without XLA; float32 otherwise. The log and results.json say which, and why.")
  worker_hosts: Tuple[str, ...] = _setting(
      (), "With --strategy=multi_worker_mirrored: host:port of every worker, the same list on "
      "each; builds TF_CONFIG. Unset reads TF_CONFIG from the environment.")
  task_index: int = _setting(0, "This worker's index in --worker_hosts.")
  worker_timeout: float = _setting(
      120.0, "Multi-worker: seconds without progress (a peer that never starts or dies) before "
      "this worker stops (exit 3, or 137 from its watchdog).")
  deterministic: bool = _setting(
      False, "Turn on TensorFlow op determinism: the same run gives bit-identical weights, "
      "also across a kill and resume. Slower on GPUs.")


  def __post_init__(self):
    _make_tuples(self, "worker_hosts")
    if self.backend not in BACKENDS:
      raise errors.UserError(f"--backend={self.backend} is not a Keras backend this trainer "
                             f"runs on; choose {' or '.join(BACKENDS)}.")



@dataclasses.dataclass(frozen=True)
class OutputConfig:
  """What a run writes, where and how often: the workdir, scalars, checkpoints, exports."""

  workdir: Optional[str] = _setting(
      None, "Folder for TensorBoard events, checkpoints and results.json; unset names it after "
      "the run, e.g. runs/mnist-functional-auto or runs/cifar10-cnn-subclass-mirrored.",
      shown="runs/<dataset>[-<model>]-<api>-<strategy>")
  log_every: int = _setting(100, "Write training scalars every this many steps.")
  progress: str = _setting(
      "auto", "Console progress: bar (a live bar), lines (a plain line every --log_every "
      "steps, after the first call and at least every 30 s, with steps/s and the training time "
      "left; for files and CI), none (test figures and the summary only); auto is bar on a "
      "terminal, lines otherwise.")
  checkpoint_every: int = _setting(
      1000, "Save a checkpoint every this many steps (and at every epoch's end); 0 saves only "
      "at epoch ends.")
  keep_checkpoints: int = _setting(3, "How many recent checkpoints to keep.")
  keep_best: str = _setting(
      "none", "accuracy or loss: keep the model of the best evaluation so far (the exported "
      "weights' evaluation) under WORKDIR/best/; none keeps only the last.")
  export_ema: bool = _setting(
      False, "Export the moving average's weights instead of the trained ones (needs "
      "--ema_decay).")
  export_saved_model: bool = _setting(
      True, "Export the inference SavedModel (saved_model/, and best/'s) beside model.keras; "
      "--noexport_saved_model writes model.keras only, which spares a sweep or a smoke run "
      "the seconds a large model's SavedModel takes to trace.")
  profile_steps: Tuple[int, ...] = _setting(
      (), "A,B: capture a TensorBoard profile of global training steps A to B (from 1) into "
      "WORKDIR/plugins/profile/, shown in TensorBoard's PROFILE tab (install the [profile] "
      "extra). Keep it short: 10 to 100 steps.")
  overwrite: bool = _setting(
      False, "Delete the run in --workdir and start afresh, instead of resuming it.")

  def __post_init__(self):
    _make_tuples(self, "profile_steps")
    if self.profile_steps and (len(self.profile_steps) != 2 or
                               not 1 <= self.profile_steps[0] <= self.profile_steps[1]):
      raise errors.UserError(f"--profile_steps={_joined(self.profile_steps)} must be A,B, the "
                             "first and last training step to profile, 1 <= A <= B, e.g. 101,120.")



# Every flag of trainer.main and the (section, field) of Config that holds it, in the order
# config.json lists them: the one place the flat names meet the sections.
FLAG_FIELDS = {
    "model": ("model", "name"),
    "api": ("model", "api"),
    "hidden_units": ("model", "hidden_units"),
    "sync_batchnorm": ("model", "sync_batchnorm"),
    "dataset": ("data", "dataset"),
    "data_dir": ("data", "data_dir"),
    "label_offset": ("data", "label_offset"),
    "tfds_data_dir": ("data", "tfds_data_dir"),
    "image_size": ("data", "image_size"),
    "validation_split": ("data", "validation_split"),
    "image_shape": ("data", "image_shape"),
    "num_classes": ("data", "num_classes"),
    "num_test_examples": ("data", "num_test_examples"),
    "augment": ("data", "augment"),
    "eval_crop": ("data", "eval_crop"),
    "normalize": ("data", "normalize"),
    "memory_limit_mb": ("data", "memory_limit_mb"),
    "data_service": ("data", "data_service"),
    "epochs": ("loop", "epochs"),
    "batch_size": ("data", "batch_size"),
    "optimizer": ("optim", "optimizer"),
    "momentum": ("optim", "momentum"),
    "nesterov": ("optim", "nesterov"),
    "weight_decay": ("optim", "weight_decay"),
    "learning_rate": ("optim", "learning_rate"),
    "lr_scaling": ("optim", "lr_scaling"),
    "warmup_steps": ("optim", "warmup_steps"),
    "warmup_epochs": ("optim", "warmup_epochs"),
    "lr_schedule": ("optim", "lr_schedule"),
    "lr_drops": ("optim", "lr_drops"),
    "label_smoothing": ("optim", "label_smoothing"),
    "clip_norm": ("optim", "clip_norm"),
    "grad_accum_steps": ("optim", "grad_accum_steps"),
    "ema_decay": ("optim", "ema_decay"),
    "export_ema": ("output", "export_ema"),
    "export_saved_model": ("output", "export_saved_model"),
    "keep_best": ("output", "keep_best"),
    "seed": ("data", "seed"),
    "max_steps_per_epoch": ("loop", "max_steps_per_epoch"),
    "eval_steps": ("loop", "eval_steps"),
    "eval_every": ("loop", "eval_every"),
    "backend": ("runtime", "backend"),
    "strategy": ("runtime", "strategy"),
    "cpu_devices": ("runtime", "cpu_devices"),
    "gpu_memory_growth": ("runtime", "gpu_memory_growth"),
    "precision": ("runtime", "precision"),
    "worker_hosts": ("runtime", "worker_hosts"),
    "task_index": ("runtime", "task_index"),
    "worker_timeout": ("runtime", "worker_timeout"),
    "steps_per_loop": ("loop", "steps_per_loop"),
    "jit_compile": ("loop", "jit_compile"),
    "workdir": ("output", "workdir"),
    "log_every": ("output", "log_every"),
    "progress": ("output", "progress"),
    "checkpoint_every": ("output", "checkpoint_every"),
    "keep_checkpoints": ("output", "keep_checkpoints"),
    "profile_steps": ("output", "profile_steps"),
    "overwrite": ("output", "overwrite"),
    "deterministic": ("runtime", "deterministic"),
}



SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "loop": LoopConfig,
            "runtime": RuntimeConfig, "output": OutputConfig}
# A run's learning rate is given for a batch of this many examples under --lr_scaling=linear.
LINEAR_SCALING_BATCH = 256


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a user chooses for a run, in one section per job; library code reads this, never
  absl flags, and each module takes only its section.

  batch_size and seed live in data, since the pipeline draws every batch from them; the model
  builder (seed) and the peak learning rate (batch_size) take them as values. log_every,
  checkpoint_every, keep_best and export_ema live in output beside the workdir and
  keep_checkpoints, since they say what the run writes and when.
  """

  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
  loop: LoopConfig = dataclasses.field(default_factory=LoopConfig)
  runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
  output: OutputConfig = dataclasses.field(default_factory=OutputConfig)

  def __post_init__(self):
    # The checks that span sections; each section checks its own values.
    if self.optim.grad_accum_steps < 1 or self.data.batch_size % self.optim.grad_accum_steps:
      raise errors.UserError(
          f"--grad_accum_steps={self.optim.grad_accum_steps} must be 1 or more and divide "
          f"--batch_size={self.data.batch_size} (the examples per update), e.g. 2 or 4.")
    if self.output.export_ema and not self.optim.ema_decay:
      raise errors.UserError("--export_ema exports the moving average of the weights; add "
                             "--ema_decay (e.g. 0.999) or leave --export_ema out.")
    if self.data.data_service and self.runtime.deterministic:
      raise errors.UserError("--deterministic promises bit-identical runs, and batches from "
                             "--data_service arrive in the order its workers finish them. Leave "
                             "one of the two out.")
    if self.output.workdir is None:
      object.__setattr__(self, "output", dataclasses.replace(
          self.output, workdir=os.path.join("runs", self.run_name)))

  @classmethod
  def from_flags(cls, **flags) -> "Config":
    """The Config of the flat settings `flags`, keyed by flag name (trainer.main's flags,
    config.json); the flags left out take their defaults."""
    unknown = sorted(set(flags) - set(FLAG_FIELDS))
    if unknown:
      raise TypeError(f"Config has no setting {', '.join(unknown)}.")
    fields = {section: {} for section in SECTIONS}
    for flag, value in flags.items():
      section, field = FLAG_FIELDS[flag]
      fields[section][field] = value
    return cls(**{section: SECTIONS[section](**values) for section, values in fields.items()})

  def to_flags(self) -> dict:
    """The settings keyed by flag name, in FLAG_FIELDS's order: what config.json holds."""
    return {flag: getattr(getattr(self, section), field)
            for flag, (section, field) in FLAG_FIELDS.items()}

  def replace(self, **changes) -> "Config":
    """Returns a copy with `changes`, keyed by flag name, applied."""
    return Config.from_flags(**{**self.to_flags(), **changes})

  @property
  def run_name(self) -> str:
    """The default workdir's name, e.g. mnist-functional-auto or cifar10-cnn-subclass-auto."""
    data = self.data
    dataset = data.dataset or (os.path.basename(os.path.normpath(data.data_dir))
                               if data.data_dir else "mnist")
    model = self.model.name
    parts = [dataset, short_model_name(model) if model != "mlp" else None, self.model.api,
             self.runtime.strategy]
    return "-".join(part for part in parts if part)

  @property
  def peak_learning_rate(self) -> float:
    """The learning rate after the warm-up: --learning_rate, times --batch_size / 256 under
    --lr_scaling=linear. The optimizer's schedule and results.json both read it here."""
    if self.optim.lr_scaling == "linear":
      return self.optim.learning_rate * self.data.batch_size / LINEAR_SCALING_BATCH
    return self.optim.learning_rate


def _make_tuples(section, *names: str) -> None:
  """Lists (from absl's list flags, or config.json) become tuples: the section stays immutable."""
  for name in names:
    object.__setattr__(section, name, tuple(getattr(section, name)))


def brings_its_own_api(model: str) -> bool:
  """True for a --model that comes built, whose API is detected: your own function
  (path/file.py:function, module:function) or a Keras Application (applications.NAME)."""
  return ":" in model or model.startswith(APPLICATIONS_PREFIX)


def short_model_name(model: str) -> str:
  """A --model value as a folder name may hold it: cnn, or nets.build for path/to/nets.py:build."""
  if ":" not in model:
    return model
  location, function = model.rsplit(":", 1)
  return f"{os.path.splitext(os.path.basename(location))[0]}.{function}"


def _joined(values) -> str:
  return ",".join(map(str, values))


def _fields(section: type) -> dict:
  return {field.name: field for field in dataclasses.fields(section)}


# Each flag's dataclass field, whose metadata holds its help text.
SETTINGS = {flag: _fields(SECTIONS[section])[field]
            for flag, (section, field) in FLAG_FIELDS.items()}


def default(name: str):
  """Returns the default of the setting `name`."""
  return SETTINGS[name].default


def help_text(name: str) -> str:
  """Returns the help text of the setting `name`."""
  return SETTINGS[name].metadata["help"]


def shown_default(name: str) -> str:
  """The default of the setting `name` as --help states it: the value, or what unset means."""
  field = SETTINGS[name]
  if field.metadata["shown"] is not None:
    return field.metadata["shown"]
  value = field.default
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, tuple):
    return ",".join(map(str, value)) if value else "unset"
  if value is None:
    return "unset"
  return f"{value:g}" if isinstance(value, float) else str(value)


def compiles_with_xla(jit_compile: Optional[bool], model: str, batch_size: int,
                      num_replicas: int) -> bool:
  """Whether the train step of `model` at global `batch_size` on `num_replicas` replicas runs
  under XLA (--jit_compile, or auto's choice when it is None). Values, not a Config: a device
  plan asks it of settings that are not a run's yet."""
  # Several replicas compile only forward and backward (see trainer.backends.tensorflow.task);
  # one compiles all.
  if jit_compile is not None:
    return jit_compile
  # Only the mlp by default: XLA's CPU convolutions are many times slower than TensorFlow's
  # oneDNN kernels, in bfloat16 too (docs/measurements.md, "XLA on CPUs"). Only below
  # XLA_MAX_BATCH: small steps gain most from fusing whole steps into one call, large ones
  # are matmuls, which oneDNN runs faster than XLA's CPU dots.
  return num_replicas == 1 and model == "mlp" and batch_size < XLA_MAX_BATCH


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
  input_index: int = 0  # Which of the processes that read training data this one is.
  num_inputs: int = 1  # How many processes read training data: the workers of a cluster.
  hosts: int = 1  # The machines the workers run on: a CPU's measured ceiling is a machine's.
  # The run's device_plan.DevicePlan (None where a caller resolves a Config by hand).
  device_plan: Optional[object] = None

  @property
  def steps_per_loop(self) -> int:
    return self.config.loop.steps_per_loop or AUTO_STEPS_PER_LOOP

  @property
  def calls_sized_by_time(self) -> bool:
    """--steps_per_loop=auto: each call's steps come from the measured step time, up to
    steps_per_loop. Not across workers, whose calls must end at the same steps."""
    return not self.config.loop.steps_per_loop and self.strategy != "multi_worker_mirrored"

  @property
  def jit_compile(self) -> bool:
    """The step under XLA: the device plan's decision (JAX compiles every step)."""
    if self.device_plan is not None:
      return self.device_plan.xla
    return compiles_with_xla(self.config.loop.jit_compile, self.config.model.name,
                             self.config.data.batch_size, self.num_replicas)

  def run_config(self) -> dict:
    """config.json: the user's settings with the strategy, precision and replicas resolved."""
    return {**self.config.to_flags(), "strategy": self.strategy, "precision": self.precision,
            "num_replicas": self.num_replicas}
