"""The learning problem of a run: model, optimizer, loss scaling, metrics and their compiled steps.

Nothing here knows about time, files or boundaries: the controller calls `train_loop(num_steps)`
and `evaluate()`. Each step runs inside `strategy.run` under every strategy, with Keras's model,
optimizer, loss and metrics (Keras 3's model.fit fails under MultiWorkerMirroredStrategy,
keras-team/keras#20585). The loss is summed per replica and divided by the GLOBAL batch, because
Keras's optimizer all-reduces gradients with SUM. Under --grad_accum_steps=K each replica's
batch runs as K micro-batches in an in-graph loop whose gradients are summed before that one
update, so a step is still one update of the whole --batch_size and every boundary (log,
checkpoint, stop) falls between updates.
"""

import hashlib
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from trainer import config as config_lib
from trainer.backends import interface
from trainer.backends.tensorflow import averaging
from trainer.bench import flops
from trainer.data import input_pipeline
from trainer.distribute import distribution
from trainer.distribute import precision as precision_lib
from trainer.loop import optimization
from trainer.models import factory



class Task(interface.TaskPolicy):
  """Builds the model and optimizer under the strategy and runs training and evaluation steps."""

  def __init__(self, settings: config_lib.RunSettings, strategy: tf.distribute.Strategy,
               pipeline: input_pipeline.InputPipeline, build_model: factory.ModelBuilder):
    self._settings, self._strategy = settings, strategy
    config, optim = settings.config, settings.config.optim
    with strategy.scope():
      built = build_model(pipeline.image_shape, pipeline.num_classes, settings.precision)
      self.model = built.model
      self.api = built.api  # As detected for the user's own model.
      self.from_logits = built.from_logits
      self.learning_rate = optimization.learning_rate_schedule(
          optim, config.peak_learning_rate, config.loop.epochs, pipeline.steps_per_epoch)
      self._gradient_norm = keras.metrics.Mean("gradient_norm") if optim.clip_norm else None
      self.loss_scaling = precision_lib.uses_loss_scaling(settings.precision)
      self.optimizer = optimization.make_optimizer(
          optim, self.learning_rate, self.model.trainable_variables, self._gradient_norm,
          loss_scaling=self.loss_scaling)
      self._l2_variables = (optimization.decayed_variables(self.model.trainable_variables)
                            if optim.optimizer == "sgd" and optim.weight_decay else [])
      # The weights' moving average (--ema_decay), or None; the checkpoint holds it.
      self.ema = (averaging.WeightAverage(strategy, self.model.trainable_variables,
                                          optim.ema_decay) if optim.ema_decay else None)
      self._train_loss = keras.metrics.Mean("loss")
      self._train_accuracy = keras.metrics.SparseCategoricalAccuracy("accuracy")
      self._eval_loss = keras.metrics.Mean("loss")
      self._eval_accuracy = keras.metrics.SparseCategoricalAccuracy("accuracy")
    self._loss_fn, self._train_loss_fn = optimization.loss_functions(
        self.from_logits, optim.label_smoothing, pipeline.num_classes)
    # Variables each replica updates in its own copy during a step, averaged after it
    # (BatchNorm's moving statistics of the ResNets: see resnet._assign_this_replicas_copy).
    self._replica_averaged = distribution.replica_averaged(self.model.non_trainable_variables)
    self._forward_backward = self._forward_backward_eager
    if settings.jit_compile and settings.num_replicas > 1:
      # Several replicas: the cross-replica gradient sum cannot run inside XLA, the rest can.
      self._forward_backward = tf.function(self._forward_backward_eager, jit_compile=True)
    self._predict = self._predict_eager
    if settings.precision == "mixed_float16":
      # Outside XLA, float16 matmuls crawl on a CPU; float32 and bfloat16 run as fast either
      # way, so they keep the plain graph (docs/measurements.md).
      self._predict = tf.function(self._predict_eager, jit_compile=True)
    self._eval_dataset = distribution.distribute_dataset(strategy, pipeline.eval_dataset())
    whole = pipeline.final_test_split()
    # The run's last evaluation covers the whole test split (or its first --num_test_examples),
    # whatever --eval_steps limits.
    self._whole_split = (None if whole.num_test_examples == pipeline.num_test_examples else
                         distribution.distribute_dataset(strategy, whole.eval_dataset()))
    self.test_examples = whole.num_test_examples
    self.test_split_examples = pipeline.test_split_size or whole.num_test_examples
    self._evaluate_chunk = tf.function(self._evaluate_chunk_eager)
    self._iterator, self._pack, self._train_loop = None, 1, None
    # Seconds train_loop has spent waiting for the next batch, summed over this process: the
    # input pipeline's share of the loop (throughput.ThroughputMeter reads it).
    self.input_wait_s = 0.0
    self._stop_requests_sum = None

  def scope(self):
    """The strategy's scope, where the checkpoint's own variables are made."""
    return self._strategy.scope()

  def trackables(self) -> dict:
    """What the checkpoint holds of the task: the model, the optimizer (with its loss-scale
    state) and the weights' moving average where the run keeps one."""
    held = {"model": self.model, "optimizer": self.optimizer, "ema": self.ema}
    return {name: value for name, value in held.items() if value is not None}

  @property
  def max_pack(self) -> int:
    """How many steps one XLA call may run in an in-graph loop (see schedule.pack_size): the
    device plan's (one replica under XLA only, bounded by the host bytes a pack stacks)."""
    return self._settings.device_plan.pack_steps

  def start_training(self, dataset: tf.data.Dataset, pack: int, per_process: bool = False) -> None:
    """Sets the batches that train_loop consumes: one element a step, or a pack of `pack`.

    With `per_process`, each element is this process's part of the global batch (its slice, or
    a batch of its own files), not the global batch.
    """
    if per_process:
      distributed = distribution.distribute_per_process(self._strategy, dataset,
                                                        self._settings.config.data.batch_size)
    else:
      distributed = distribution.distribute_dataset(self._strategy, dataset)
    self._iterator = iter(distributed)
    self._pack = pack
    self._train_loop = self._compile_train_loop(pack)

  def train_loop(self, num_steps: int) -> int:
    """Trains `num_steps` steps (a multiple of the pack) in one call.

    Returns 0, or the 1-based step of this call whose loss was not finite: training stops there.
    """
    bad_step, waited = self._train_loop(self._iterator,
                                        tf.constant(num_steps // self._pack, tf.int64))
    self.input_wait_s += float(waited)
    return int(bad_step)

  def _train_figures(self) -> Tuple[float, float, float, Optional[float]]:
    """(loss, accuracy, learning rate now, mean gradient norm or None): train_metrics's."""
    norm = self._gradient_norm
    return (float(self._train_loss.result()), float(self._train_accuracy.result()),
            float(self.learning_rate(self.optimizer.iterations)),
            None if norm is None else float(norm.result()))

  @property
  def loss_scale(self) -> Optional[float]:
    """The dynamic loss scale now under float16 loss scaling, else None."""
    return float(self.optimizer.dynamic_scale.numpy()) if self.loss_scaling else None

  @property
  def skipped_steps(self) -> int:
    """Updates skipped so far (the checkpoint keeps the count): under float16 loss scaling, the
    steps whose gradient summed over replicas was not finite; otherwise 0."""
    return int(self.optimizer.skipped_steps.numpy()) if self.loss_scaling else 0

  def reset_train_metrics(self) -> None:
    for metric in (self._train_loss, self._train_accuracy, self._gradient_norm):
      if metric is not None:
        metric.reset_state()

  def _evaluate_weights(self, dataset, next_chunk: Callable[[int], int]
                        ) -> Optional[Dict[str, float]]:
    self._eval_loss.reset_state()
    self._eval_accuracy.reset_state()
    iterator = iter(dataset)
    batches_done = 0
    while True:
      num_batches = next_chunk(batches_done)
      if num_batches <= 0:
        return None
      if bool(self._evaluate_chunk(iterator, tf.constant(num_batches, tf.int64))):
        break
      batches_done += num_batches
    return {"loss": float(self._eval_loss.result()),
            "accuracy": float(self._eval_accuracy.result())}

  def _count_stop_requests(self, flag: int) -> float:
    """The workers' stop requests summed over the cluster (agreed_stop's collective)."""
    if self._stop_requests_sum is None:
      self._stop_requests_sum = tf.function(lambda flag: self._strategy.reduce(
          tf.distribute.ReduceOp.SUM, self._strategy.run(lambda: flag), axis=None))
    return float(self._stop_requests_sum(tf.constant(float(flag))))

  def weights_sha256(self) -> str:
    """A digest of every weight: replicas in sync end with the same one."""
    return _sha256(self.model.weights)

  def ema_weights_sha256(self) -> Optional[str]:
    """A digest of the moving average's weights, or None without --ema_decay."""
    return _sha256(self.ema.averages) if self.ema is not None else None

  def training_flops_per_step(self, image_shape: Sequence[int]) -> int:
    """FLOPs of one training step over the global batch: the dots and convolutions of its
    forward and backward passes, counted from their HLO (trainer.bench.flops), as JaxTask
    counts them on JAX."""
    return flops.train_step_flops(self.model, self.from_logits, image_shape,
                                  self._settings.config.data.batch_size)

  # ---------------------------------------------------------------- Compiled steps.
  def _forward_backward_eager(self, images, labels):
    with tf.GradientTape() as tape:
      outputs = self._outputs(images, training=True)
      per_example_loss = self._train_loss_fn(labels, outputs)
      # Divide by the GLOBAL batch: the optimizer sums gradients across replicas.
      loss = tf.reduce_sum(per_example_loss) / self._settings.config.data.batch_size
      if self._l2_variables:
        loss += optimization.l2_loss(
            self._l2_variables, self._settings.config.optim.weight_decay,
            self._settings.num_replicas * self._settings.config.optim.grad_accum_steps)
      scaled_loss = self.optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled_loss, self.model.trainable_variables)
    return gradients, per_example_loss, outputs

  def _accumulated_gradients(self, images, labels):
    # The replica's batch as --grad_accum_steps micro-batches, one after another in an in-graph
    # loop: only one micro-batch's activations are alive at a time. Each micro-batch's loss is
    # divided by the global batch already, so the sum of their gradients is the batch's.
    steps = self._settings.config.optim.grad_accum_steps
    if steps == 1:
      return self._forward_backward(images, labels)
    micro_images = tf.reshape(images, tf.concat([[steps, -1], tf.shape(images)[1:]], 0))
    micro_labels = tf.reshape(labels, [steps, -1])
    gradients = [tf.zeros(variable.shape, variable.dtype)
                 for variable in self.model.trainable_variables]
    # Micro-batches of one size, so each array's concat() is the replica's whole batch again.
    losses = tf.TensorArray(tf.float32, size=steps, element_shape=[None])
    outputs = tf.TensorArray(tf.float32, size=steps, element_shape=[None, None])
    for index in tf.range(steps):
      micro_gradients, micro_losses, micro_outputs = self._forward_backward(
          micro_images[index], micro_labels[index])
      gradients = [total if gradient is None else total + gradient
                   for total, gradient in zip(gradients, micro_gradients)]
      losses = losses.write(index, micro_losses)
      outputs = outputs.write(index, micro_outputs)
    return gradients, losses.concat(), outputs.concat()

  def _replica_train_step(self, images, labels):
    # Returns 1.0 if this replica's loss was not finite. The gradients are summed over replicas
    # before the optimizer sees them, so the loss scale's skip and the clipping are decided from
    # the same values on every replica and worker (see optimization._taking_summed_gradients).
    gradients, per_example_loss, outputs = self._accumulated_gradients(images, labels)
    distribution.average_replica_copies(self._replica_averaged)
    gradients = optimization.sum_over_replicas(gradients)
    self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
    self._train_loss.update_state(per_example_loss)
    self._train_accuracy.update_state(labels, outputs)
    not_finite = tf.reduce_any(~tf.math.is_finite(per_example_loss))
    if not self.loss_scaling:
      # A NaN can leave the loss finite (TensorFlow's CPU ReLU makes it 0) and still reach the
      # weights through the gradients; with loss scaling such a step is skipped instead.
      not_finite = tf.reduce_any([not_finite] + [
          tf.reduce_any(~tf.math.is_finite(gradient)) for gradient in gradients])
    return tf.cast(not_finite, tf.float32)

  def _train_step(self, images, labels, index=None):
    # Trains on the batch (or the index-th batch of the pack) of each replica; returns 1.0 if
    # the loss was not finite on any replica.
    def replica_step(images, labels):
      if index is None:
        return self._replica_train_step(images, labels)
      return self._replica_train_step(images[index], labels[index])
    skipped_before = self._skipped_so_far()
    not_finite = self._strategy.reduce(tf.distribute.ReduceOp.SUM,
                                       self._strategy.run(replica_step, args=(images, labels)),
                                       axis=None)
    if self.ema is not None:  # After the update, with the same weights on every replica.
      if skipped_before is None:
        self.ema.update()
      else:  # A skipped update leaves the average too, as Model Garden's EMA inside its scaling.
        tf.cond(self._skipped_so_far() > skipped_before, tf.no_op, self._update_ema)
    return not_finite

  def _skipped_so_far(self) -> Optional[tf.Tensor]:
    return tf.identity(self.optimizer.skipped_steps.value) if self.loss_scaling else None

  def _update_ema(self) -> tf.Operation:
    self.ema.update()
    return tf.no_op()

  def _compile_train_loop(self, pack: int) -> Callable:
    def train_pack(images, labels):
      # One element of the training dataset: a batch, or a pack of `pack` batches run as an
      # in-graph loop. Returns one not-finite flag per step. The loop sits outside
      # strategy.run: inside a replica function the optimizer's cross-replica sync (a
      # merge_call) is refused.
      if pack == 1:
        return tf.reshape(self._train_step(images, labels), [1])
      flags = tf.TensorArray(tf.float32, size=pack)
      for index in tf.range(pack):
        flags = flags.write(index, self._train_step(images, labels, index))
      return flags.stack()

    if self._settings.jit_compile and self._settings.num_replicas == 1:
      # One replica: XLA fuses whole steps (optimizer update and metrics included) into one call.
      train_pack = tf.function(train_pack, jit_compile=True)

    clock = _loop_clock(self._settings.config.runtime.deterministic)

    @tf.function
    def train_loop(iterator, num_packs):
      # Several steps per call: the Python round trip is paid once per loop, not once per step.
      # Returns the bad step (or 0) and the seconds spent waiting for the next element: the
      # clock is read after the previous step's flags exist and after the element arrives, so
      # the difference is the time the step could not start for want of input.
      bad_step = tf.constant(0, tf.int64)
      waited = tf.constant(0.0, tf.float64)
      previous = tf.constant(0.0)
      for index in tf.range(num_packs, dtype=tf.int64):
        with tf.control_dependencies([previous]):
          asked = clock()
        with tf.control_dependencies([asked]):
          element = next(iterator)
        with tf.control_dependencies(tf.nest.flatten(element, expand_composites=True)):
          waited += clock() - asked
        flags = train_pack(*element)
        previous = tf.reduce_sum(flags)
        if tf.reduce_any(flags > 0):
          bad_step = index * pack + tf.argmax(tf.cast(flags > 0, tf.int64)) + 1
          break
      return bad_step, waited

    return train_loop

  def _outputs(self, images, training):
    # In float32 whatever the model's last layer computes in: the loss and the metrics stay
    # accurate under mixed precision.
    return tf.cast(self.model(images, training=training), tf.float32)

  def _predict_eager(self, images):
    return self._outputs(images, training=False)

  def _replica_eval_step(self, images, labels, weights):
    outputs = self._predict(images)
    self._eval_loss.update_state(self._loss_fn(labels, outputs), sample_weight=weights)
    self._eval_accuracy.update_state(labels, outputs, sample_weight=weights)

  def _evaluate_chunk_eager(self, iterator, num_batches):
    # Up to `num_batches` test batches; True once the test split is exhausted.
    exhausted = tf.constant(False)
    for _ in tf.range(num_batches):
      batch = iterator.get_next_as_optional()
      if not batch.has_value():
        exhausted = tf.constant(True)
        break
      self._strategy.run(self._replica_eval_step, args=batch.get_value())
    return exhausted


def _loop_clock(deterministic: bool) -> Callable[[], tf.Tensor]:
  """The in-graph clock that times the wait for input: tf.timestamp, which op determinism
  (--deterministic) refuses as a source of nondeterminism; there a Python call reads the clock
  instead (about 20 us a read, paid by deterministic runs only). The time never enters the math."""
  if not deterministic:
    return tf.timestamp
  return lambda: tf.reshape(tf.py_function(time.perf_counter, [], tf.float64), [])


def _sha256(variables: Sequence) -> str:
  return hashlib.sha256(b"".join(variable.numpy().tobytes() for variable in variables)).hexdigest()
