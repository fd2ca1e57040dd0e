"""The learning problem of a run on Keras's JAX backend, behind the same seam as
backends/tensorflow/task.py.

The controller, plan, meter, progress, checkpointer and records see `train_loop(num_steps)` and
`evaluate()` as from the TensorFlow task. A step is one jitted function of the state (the
model's trainable and other variables, the optimizer's, the weights' moving average and the
metrics' sums) over `model.stateless_call` and `optimizer.stateless_apply`, with the same
model, optimizer, schedule and losses as on TensorFlow. Between calls the Keras variables hold
the state (assigning an array to one costs no copy), so checkpoints, exports, the moving
average's swap and the digests read the model as on TensorFlow.

Under keras.distribution's DataParallel the batch is sharded along its first axis and the
weights replicated, and the compiled step is one SPMD program: its loss is the global batch's,
so its gradient is already summed over devices and every device decides loss scaling's
"finite" and the clipping from the same values. BatchNormalization's batch statistics in a
training step are the global batch's too (as --sync_batchnorm on TensorFlow).
"""

import contextlib
import hashlib
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import keras
import numpy as np
import tensorflow as tf

from trainer import config as config_lib
from trainer.backends import interface
from trainer.bench import flops
from trainer.data import input_pipeline
from trainer.distribute import precision as precision_lib
from trainer.loop import optimization
from trainer.models import factory
from trainer.records import checkpointing


class WeightAverage:
  """The moving average of the trainable weights (--ema_decay) as arrays the step updates:
  average -= (1 - decay) * (average - weight), from the initial weights, as
  backends/tensorflow/averaging.WeightAverage."""

  def __init__(self, variables: Sequence[keras.Variable], decay: float):
    self._variables, self.decay = list(variables), float(decay)
    # Copies: the step donates its state's buffers, and XLA refuses one buffer donated twice.
    self.averages = [jnp.copy(variable.value) for variable in self._variables]

  @contextlib.contextmanager
  def swapped(self) -> Iterator[None]:
    """The model holds the average inside the block, its own weights again after it."""
    weights = [variable.value for variable in self._variables]
    for variable, average in zip(self._variables, self.averages):
      variable.assign(average)
    try:
      yield
    finally:
      for variable, weight in zip(self._variables, weights):
        variable.assign(weight)


class JaxTask(interface.TaskPolicy):
  """Builds the model and optimizer (under the run's keras.distribution, if any) and runs
  jitted training and evaluation steps."""

  def __init__(self, settings: config_lib.RunSettings, pipeline: input_pipeline.InputPipeline,
               build_model: factory.ModelBuilder):
    self._settings = settings
    config, optim = settings.config, settings.config.optim
    built = build_model(pipeline.image_shape, pipeline.num_classes, settings.precision)
    self.model, self.api, self.from_logits = built.model, built.api, built.from_logits
    self.learning_rate = optimization.learning_rate_schedule(
        optim, config.peak_learning_rate, config.loop.epochs, pipeline.steps_per_epoch)
    self.loss_scaling = precision_lib.uses_loss_scaling(settings.precision)
    self.optimizer = optimization.make_optimizer(
        optim, self.learning_rate, self.model.trainable_variables,
        loss_scaling=self.loss_scaling, global_gradient=True)
    trainable = self.model.trainable_variables
    decayed = ({id(v) for v in optimization.decayed_variables(trainable)}
               if optim.optimizer == "sgd" and optim.weight_decay else set())
    self._l2_indices = [index for index, v in enumerate(trainable) if id(v) in decayed]
    self.ema = WeightAverage(trainable, optim.ema_decay) if optim.ema_decay else None
    self._loss_fn, self._train_loss_fn = optimization.loss_functions(
        self.from_logits, optim.label_smoothing, pipeline.num_classes)
    distribution = keras.distribution.distribution()
    self._data_sharding = (distribution.get_data_layout((config.data.batch_size,)).backend_layout
                           if distribution is not None else None)
    self._eval_dataset = pipeline.eval_dataset()
    whole = pipeline.final_test_split()
    self._whole_split = (None if whole.num_test_examples == pipeline.num_test_examples
                         else whole.eval_dataset())
    self.test_examples = whole.num_test_examples
    self.test_split_examples = pipeline.test_split_size or whole.num_test_examples
    # [loss sum, correct, examples, gradient norm sum, steps] since the last reset.
    self._sums = jnp.zeros([5], jnp.float32)
    self._train_step = jax.jit(self._train_step_fn, donate_argnums=(0,))
    self._train_pack = jax.jit(self._train_pack_fn, donate_argnums=(0,))
    self._pack = 1
    self._eval_step = jax.jit(self._eval_step_fn)
    self._iterator: Optional[Iterator] = None
    self._per_process = False
    self.input_wait_s = 0.0
    # Steps per compiled call: a scan over a pack of batches (schedule.pack_size), on every
    # strategy, since one SPMD program holds the gradient sum too; the device plan's
    # (schedule.pack_limit, bounded by the host bytes a pack stacks).
    self.max_pack = settings.device_plan.pack_steps

  # ---------------------------------------------------------------- The controller's seam.
  def start_training(self, dataset: tf.data.Dataset, pack: int, per_process: bool = False) -> None:
    """Sets the batches that train_loop consumes: one element a step, or a pack of `pack`
    stacked batches trained in one compiled call. With `per_process`, each batch is this
    process's part of the global batch already."""
    self._iterator = dataset.as_numpy_iterator()
    self._per_process = per_process
    self._pack = pack

  def train_loop(self, num_steps: int) -> int:
    """Trains `num_steps` steps (a multiple of the pack); returns 0, or the 1-based step whose
    loss was not finite."""
    state = self._state()
    packed = self._pack > 1
    train = self._train_pack if packed else self._train_step
    calls = num_steps // self._pack
    flags = []
    try:
      batch = self._next_batch(packed, running=None)
      for call in range(calls):
        state, flag = train(state, *batch)  # Dispatched: runs while the next pack is read.
        flags.append(flag)
        if call + 1 < calls:
          # The next pack is read and copied onto the devices while this call computes, so
          # the devices do not idle through the copy.
          batch = self._next_batch(packed, running=flag)
    finally:
      self._set_state(state)
    bad = np.flatnonzero(np.concatenate([np.ravel(flag) for flag in jax.device_get(flags)]))
    return int(bad[0]) + 1 if bad.size else 0

  def _next_batch(self, packed: bool, running: Optional[jax.Array]) -> Tuple[jax.Array, ...]:
    """The next batch (or pack) on the devices. Its wait counts as input wait unless the call
    `running` was still computing when it arrived (the devices were busy meanwhile)."""
    asked = time.perf_counter()
    images, labels = next(self._iterator)
    placed = (self._global(images, packed, self._per_process),
              self._global(labels, packed, self._per_process))
    if running is None or running.is_ready():
      self.input_wait_s += time.perf_counter() - asked
    return placed

  def _train_figures(self) -> Tuple[float, float, float, Optional[float]]:
    """(loss, accuracy, learning rate now, mean gradient norm): train_metrics's."""
    loss, correct, examples, norms, steps = (float(value) for value in jax.device_get(self._sums))
    return (loss / max(examples, 1.0), correct / max(examples, 1.0),
            float(self.learning_rate(self.optimizer.iterations.value)), norms / max(steps, 1.0))

  @property
  def loss_scale(self) -> Optional[float]:
    return float(self.optimizer.dynamic_scale.value) if self.loss_scaling else None

  @property
  def skipped_steps(self) -> int:
    return int(self.optimizer.skipped_steps.value) if self.loss_scaling else 0

  def reset_train_metrics(self) -> None:
    self._sums = jnp.zeros([5], jnp.float32)

  def _count_stop_requests(self, flag: int) -> float:
    """The processes' stop requests summed over the cluster (agreed_stop's all-gather)."""
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return float(np.sum(multihost_utils.process_allgather(np.int32(flag))))

  def weights_sha256(self) -> str:
    return _sha256(variable.value for variable in self.model.weights)

  def ema_weights_sha256(self) -> Optional[str]:
    return _sha256(self.ema.averages) if self.ema is not None else None

  def training_flops_per_step(self, image_shape: Sequence[int]) -> int:
    """FLOPs of one training step over the global batch, counted as task.Task counts them on
    TensorFlow (trainer.bench.flops): the dots and convolutions of the loss's gradient over the
    whole batch, from the HLO JAX lowers it to (not compiled). The optimizer's update has no
    dot, and micro-batches (--grad_accum_steps) do the same arithmetic as the batch; the step
    itself scans them, which a count of each instruction once would see as one."""
    batch = self._settings.config.data.batch_size
    images = jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    gradients = jax.jit(jax.grad(self._loss, has_aux=True))
    lowered = gradients.lower([v.value for v in self.model.trainable_variables],
                              [v.value for v in self.model.non_trainable_variables], images,
                              labels, 1.0)
    return flops.count_hlo_flops(lowered.as_text(dialect="hlo"))

  def scope(self):
    """Where the checkpoint's variables are made: anywhere, on JAX."""
    return contextlib.nullcontext()

  def trackables(self) -> Dict[str, checkpointing.ArrayMirror]:
    """What the checkpoint holds of the task: the model's variables (its random generators'
    states included), the optimizer's and the moving average, copied through tf.Variables."""
    variables = self.model.trainable_variables + self.model.non_trainable_variables
    held = {"model": checkpointing.ArrayMirror(lambda: [v.value for v in variables],
                                               lambda values: _assign(variables, values)),
            "optimizer": checkpointing.ArrayMirror(
                lambda: [v.value for v in self.optimizer.variables],
                lambda values: _assign(self.optimizer.variables, values))}
    if self.ema is not None:
      held["ema"] = checkpointing.ArrayMirror(lambda: self.ema.averages, self._set_averages)
    return held

  def _set_averages(self, values: List[np.ndarray]) -> None:
    placed = self.model.trainable_variables
    self.ema.averages = [jax.device_put(value, variable.value.sharding)
                         for value, variable in zip(values, placed)]

  # ---------------------------------------------------------------- State.
  def _state(self) -> tuple:
    return ([v.value for v in self.model.trainable_variables],
            [v.value for v in self.model.non_trainable_variables],
            [v.value for v in self.optimizer.variables],
            list(self.ema.averages) if self.ema else [], self._sums)

  def _set_state(self, state: tuple) -> None:
    trainable, non_trainable, optimizer_values, averages, self._sums = state
    _assign(self.model.trainable_variables, trainable)
    _assign(self.model.non_trainable_variables, non_trainable)
    _assign(self.optimizer.variables, optimizer_values)
    if self.ema is not None:
      self.ema.averages = list(averages)

  def _global(self, array: np.ndarray, packed: bool = False,
              per_process: bool = False) -> jax.Array:
    """This process's batch as one array over the devices, split along the batch axis (the
    second of a pack): `array` is this process's part of the global batch already when
    `per_process`, else the global batch, of which this process keeps its share."""
    if self._data_sharding is None:
      # device_put takes a CPU's host array as it is; jnp.asarray would copy it.
      return jax.device_put(array)
    axis = 1 if packed else 0
    if jax.process_count() > 1 and not per_process:
      share = array.shape[axis] // jax.process_count()
      array = np.take(array, np.arange(share) + jax.process_index() * share, axis=axis)
    sharding = self._data_sharding
    if packed:
      sharding = jax.sharding.NamedSharding(sharding.mesh,
                                            jax.sharding.PartitionSpec(None, *sharding.spec))
    return jax.make_array_from_process_local_data(sharding, array)

  # ---------------------------------------------------------------- Compiled steps.
  def _forward(self, trainable, non_trainable, images, training: bool):
    """The model's outputs and updated non-trainable values, as `model.stateless_call` gives
    them, but through `model(...)`: stateless_call runs call() directly, so a subclassed model
    whose call() takes no `training` would run its BatchNormalization layers in inference mode
    while training; Layer.__call__ hands the phase to every layer, as on TensorFlow."""
    mapping = (list(zip(self.model.trainable_variables, trainable))
               + list(zip(self.model.non_trainable_variables, non_trainable)))
    with keras.StatelessScope(state_mapping=mapping) as scope:
      outputs = self.model(images, training=training)
    return outputs, [scope.get_current_value(v) for v in self.model.non_trainable_variables]

  def _loss(self, trainable, non_trainable, images, labels, scale):
    outputs, non_trainable = self._forward(trainable, non_trainable, images, training=True)
    outputs = keras.ops.cast(outputs, "float32")
    per_example_loss = self._train_loss_fn(labels, outputs)
    config = self._settings.config
    loss = keras.ops.sum(per_example_loss) / config.data.batch_size
    if self._l2_indices:
      loss += optimization.l2_loss([trainable[index] for index in self._l2_indices],
                                   config.optim.weight_decay, config.optim.grad_accum_steps)
    return loss * scale, (per_example_loss, outputs, non_trainable)

  def _gradients(self, trainable, non_trainable, images, labels, scale):
    # The batch's gradient, as --grad_accum_steps micro-batches one after another (a scan: one
    # micro-batch's activations alive at a time) whose gradients are summed.
    grad_fn = jax.grad(self._loss, has_aux=True)
    steps = self._settings.config.optim.grad_accum_steps
    if steps == 1:
      return grad_fn(trainable, non_trainable, images, labels, scale)
    micro_images = images.reshape((steps, -1) + images.shape[1:])
    micro_labels = labels.reshape((steps, -1))

    def micro_step(carry, batch):
      total, non_trainable = carry
      gradients, (losses, outputs, non_trainable) = grad_fn(trainable, non_trainable, *batch,
                                                            scale)
      return ([t + g for t, g in zip(total, gradients)], non_trainable), (losses, outputs)

    zeros = [jnp.zeros_like(variable) for variable in trainable]
    (gradients, non_trainable), (losses, outputs) = jax.lax.scan(
        micro_step, (zeros, non_trainable), (micro_images, micro_labels))
    return gradients, (losses.reshape(-1), outputs.reshape((-1, outputs.shape[-1])),
                       non_trainable)

  def _train_step_fn(self, state, images, labels):
    trainable, non_trainable, optimizer_values, averages, sums = state
    config = self._settings.config
    scale = 1.0
    if self.loss_scaling:
      scale = optimizer_values[[id(v) for v in self.optimizer.variables].index(
          id(self.optimizer.dynamic_scale))]
    gradients, (per_example_loss, outputs, non_trainable) = self._gradients(
        trainable, non_trainable, images, labels, scale)
    norm = jnp.zeros([], jnp.float32)
    if config.optim.clip_norm:  # The optimizer clips (global_clipnorm); this records the norm.
      norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in gradients)) / scale
    skipped_before = self._skipped(optimizer_values)
    trainable, optimizer_values = self.optimizer.stateless_apply(optimizer_values, gradients,
                                                                 trainable)
    if self.ema is not None:
      rate = 1.0 - self.ema.decay
      moved = [average - rate * (average - weight)
               for average, weight in zip(averages, trainable)]
      if skipped_before is None:
        averages = moved
      else:  # A skipped update leaves the average too.
        skipped = self._skipped(optimizer_values) > skipped_before
        averages = [jnp.where(skipped, old, new) for old, new in zip(averages, moved)]
    correct = jnp.sum(jnp.argmax(outputs, axis=-1) == labels)
    sums = sums + jnp.stack([jnp.sum(per_example_loss), correct.astype(jnp.float32),
                             jnp.float32(labels.shape[0]), norm, jnp.float32(1.0)])
    not_finite = jnp.any(~jnp.isfinite(per_example_loss))
    if not self.loss_scaling:  # As TensorFlow's task: NaN gradients under a finite loss.
      not_finite = jnp.any(jnp.stack([not_finite] + [jnp.any(~jnp.isfinite(gradient))
                                                      for gradient in gradients]))
    return (trainable, non_trainable, optimizer_values, averages, sums), not_finite

  def _train_pack_fn(self, state, images, labels):
    """A pack of steps in one compiled call: the step scanned over the stacked batches."""
    return jax.lax.scan(lambda carry, batch: self._train_step_fn(carry, *batch), state,
                        (images, labels))

  def _skipped(self, optimizer_values):
    if not self.loss_scaling:
      return None
    return optimizer_values[[id(v) for v in self.optimizer.variables].index(
        id(self.optimizer.skipped_steps))]

  def _eval_step_fn(self, trainable, non_trainable, images, labels, weights):
    outputs, _ = self._forward(trainable, non_trainable, images, training=False)
    outputs = keras.ops.cast(outputs, "float32")
    losses = self._loss_fn(labels, outputs)
    correct = (jnp.argmax(outputs, axis=-1) == labels).astype(jnp.float32)
    return jnp.stack([jnp.sum(losses * weights), jnp.sum(correct * weights), jnp.sum(weights)])

  def _evaluate_weights(self, dataset: tf.data.Dataset, next_chunk: Callable[[int], int]
                        ) -> Optional[Dict[str, float]]:
    trainable = [v.value for v in self.model.trainable_variables]
    non_trainable = [v.value for v in self.model.non_trainable_variables]
    totals = jnp.zeros([3], jnp.float32)
    batches = dataset.as_numpy_iterator()
    batches_done, exhausted = 0, False
    while not exhausted:
      num_batches = next_chunk(batches_done)
      if num_batches <= 0:
        return None
      for _ in range(min(num_batches, interface.ALL_BATCHES)):
        batch = next(batches, None)
        if batch is None:
          exhausted = True
          break
        images, labels, weights = (self._global(part) for part in batch)
        totals = totals + self._eval_step(trainable, non_trainable, images, labels, weights)
      batches_done += num_batches
    loss, correct, count = (float(value) for value in jax.device_get(totals))
    return {"loss": loss / max(count, 1.0), "accuracy": correct / max(count, 1.0)}


def _assign(variables: Sequence[keras.Variable], values: Sequence) -> None:
  for variable, value in zip(variables, values):
    variable.assign(value)


def _sha256(values) -> str:
  return hashlib.sha256(b"".join(np.asarray(value).tobytes() for value in values)).hexdigest()
