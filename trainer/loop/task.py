"""The learning problem of a run: model, optimizer, loss scaling, metrics and their compiled steps.

Nothing here knows about time, files or boundaries: the controller calls `train_loop(num_steps)`
and `evaluate()`. Each step runs inside `strategy.run` under every strategy, with Keras's model,
optimizer, loss and metrics (Keras 3's model.fit fails under MultiWorkerMirroredStrategy,
keras-team/keras#20585). The loss is summed per replica and divided by the GLOBAL batch, because
Keras's optimizer all-reduces gradients with SUM.
"""

import hashlib
import signal
from typing import Callable, Dict, Tuple

import keras
import tensorflow as tf

from trainer import config as config_lib
from trainer.data import input_pipeline
from trainer.distribute import distribution
from trainer.distribute import precision as precision_lib
from trainer.loop import optimization
from trainer.loop import schedule
from trainer.models import factory


class Task:
  """Builds the model and optimizer under the strategy and runs training and evaluation steps."""

  def __init__(self, settings: config_lib.RunSettings, strategy: tf.distribute.Strategy,
               pipeline: input_pipeline.InputPipeline, build_model: factory.ModelBuilder):
    self._settings, self._strategy = settings, strategy
    config = settings.config
    with strategy.scope():
      built = build_model(pipeline.image_shape, pipeline.num_classes, settings.precision)
      self.model = built.model
      self.api = built.api  # As detected for the user's own model.
      self.from_logits = built.from_logits
      self.learning_rate = optimization.learning_rate_schedule(config, pipeline.steps_per_epoch)
      self.optimizer = optimization.make_optimizer(config, self.learning_rate,
                                                   self.model.trainable_variables)
      self._l2_variables = (optimization.decayed_variables(self.model.trainable_variables)
                            if config.optimizer == "sgd" and config.weight_decay else [])
      if precision_lib.uses_loss_scaling(settings.precision):
        self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)  # Dynamic scaling.
      self.optimizer.build(self.model.trainable_variables)
      self._train_loss = keras.metrics.Mean("loss")
      self._train_accuracy = keras.metrics.SparseCategoricalAccuracy("accuracy")
      self._eval_loss = keras.metrics.Mean("loss")
      self._eval_accuracy = keras.metrics.SparseCategoricalAccuracy("accuracy")
    self._loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=self.from_logits,
                                                               reduction=None)
    self._train_loss_fn = self._loss_fn
    if config.label_smoothing:
      smoothed = keras.losses.CategoricalCrossentropy(
          from_logits=self.from_logits, label_smoothing=config.label_smoothing, reduction=None)
      num_classes = pipeline.num_classes
      self._train_loss_fn = lambda labels, outputs: smoothed(
          tf.one_hot(labels, num_classes), outputs)
    self._forward_backward = self._forward_backward_eager
    if settings.jit_compile and settings.num_replicas > 1:
      # Several replicas: the cross-replica gradient sum cannot run inside XLA, the rest can.
      self._forward_backward = tf.function(self._forward_backward_eager, jit_compile=True)
    self._predict = self._predict_eager
    if settings.precision == "mixed_float16":
      # Outside XLA, float16 matmuls crawl on a CPU: one evaluation of 10,000 examples took
      # 27 s without it and 0.13 s under it (2-core AVX-512 VM). float32 and bfloat16 measured
      # the same either way, so they keep the plain graph.
      self._predict = tf.function(self._predict_eager, jit_compile=True)
    self._eval_dataset = distribution.distribute_dataset(strategy, pipeline.eval_dataset())
    self._evaluate_batches = tf.function(self._evaluate_batches_eager)
    self._iterator, self._pack, self._train_loop = None, 1, None
    self._count_stop_requests = None

  @property
  def max_pack(self) -> int:
    """How many steps one XLA call may run in an in-graph loop (see schedule.pack_size).

    Only one replica under XLA packs steps: XLA here cannot compile the gradient sum across
    several replicas, nor multi_worker_mirrored's collective ops.
    """
    settings = self._settings
    if (not settings.jit_compile or settings.num_replicas > 1 or
        settings.strategy == "multi_worker_mirrored"):
      return 1
    return schedule.MAX_PACK

  def start_training(self, dataset: tf.data.Dataset, pack: int, per_process: bool = False) -> None:
    """Sets the batches that train_loop consumes: one element a step, or a pack of `pack`.

    With `per_process`, each element is this process's part of the global batch (TFRecord shards
    split among workers by file), not the global batch.
    """
    if per_process:
      distributed = distribution.distribute_per_process(self._strategy, dataset,
                                                        self._settings.config.batch_size)
    else:
      distributed = distribution.distribute_dataset(self._strategy, dataset)
    self._iterator = iter(distributed)
    self._pack = pack
    self._train_loop = self._compile_train_loop(pack)

  def train_loop(self, num_steps: int) -> int:
    """Trains `num_steps` steps (a multiple of the pack) in one call.

    Returns 0, or the 1-based step of this call whose loss was not finite: training stops there.
    """
    return int(self._train_loop(self._iterator, tf.constant(num_steps // self._pack, tf.int64)))

  def train_metrics(self) -> Dict[str, float]:
    """The training loss and accuracy since the last reset, and the learning rate now."""
    return {"loss": float(self._train_loss.result()),
            "accuracy": float(self._train_accuracy.result()),
            "learning_rate": float(self.learning_rate(self.optimizer.iterations))}

  def reset_train_metrics(self) -> None:
    self._train_loss.reset_state()
    self._train_accuracy.reset_state()

  def evaluate(self) -> Tuple[float, float]:
    """Returns (loss, accuracy) on the whole test split."""
    self._eval_loss.reset_state()
    self._eval_accuracy.reset_state()
    self._evaluate_batches(self._eval_dataset)
    return float(self._eval_loss.result()), float(self._eval_accuracy.result())

  def agreed_stop(self, local_signal: int) -> Tuple[int, bool]:
    """Whether any worker was asked to stop: (signal number, whether it reached this process).

    Under multi_worker_mirrored every worker calls this at the same loop boundary and one small
    all-reduce tells them all, so a SIGTERM to any one worker (how preemption arrives) makes
    every worker save the same step and stop, as TensorFlow's PreemptionCheckpointHandler
    guarantees. A worker that got no signal itself stops as if by SIGTERM.
    """
    if self._settings.strategy != "multi_worker_mirrored":
      return local_signal, bool(local_signal)
    if self._count_stop_requests is None:
      self._count_stop_requests = tf.function(lambda flag: self._strategy.reduce(
          tf.distribute.ReduceOp.SUM, self._strategy.run(lambda: flag), axis=None))
    requests = float(self._count_stop_requests(tf.constant(1.0 if local_signal else 0.0)))
    if not requests:
      return 0, False
    return (local_signal or signal.SIGTERM), bool(local_signal)

  def weights_sha256(self) -> str:
    """A digest of every weight: replicas in sync end with the same one."""
    return hashlib.sha256(
        b"".join(variable.numpy().tobytes() for variable in self.model.weights)).hexdigest()

  # ---------------------------------------------------------------- Compiled steps.
  def _forward_backward_eager(self, images, labels):
    with tf.GradientTape() as tape:
      outputs = self._outputs(images, training=True)
      per_example_loss = self._train_loss_fn(labels, outputs)
      # Divide by the GLOBAL batch: the optimizer sums gradients across replicas.
      loss = tf.reduce_sum(per_example_loss) / self._settings.config.batch_size
      if self._l2_variables:
        loss += optimization.l2_loss(self._l2_variables, self._settings.config.weight_decay,
                                     self._settings.num_replicas)
      scaled_loss = self.optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled_loss, self.model.trainable_variables)
    return gradients, per_example_loss, outputs

  def _replica_train_step(self, images, labels):
    # Returns 1.0 if this replica's loss was not finite.
    gradients, per_example_loss, outputs = self._forward_backward(images, labels)
    self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
    self._train_loss.update_state(per_example_loss)
    self._train_accuracy.update_state(labels, outputs)
    return tf.cast(tf.reduce_any(~tf.math.is_finite(per_example_loss)), tf.float32)

  def _train_step(self, images, labels, index=None):
    # Trains on the batch (or the index-th batch of the pack) of each replica; returns 1.0 if
    # the loss was not finite on any replica.
    def replica_step(images, labels):
      if index is None:
        return self._replica_train_step(images, labels)
      return self._replica_train_step(images[index], labels[index])
    return self._strategy.reduce(tf.distribute.ReduceOp.SUM,
                                 self._strategy.run(replica_step, args=(images, labels)),
                                 axis=None)

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

    @tf.function
    def train_loop(iterator, num_packs):
      # Several steps per call: the Python round trip is paid once per loop, not once per step.
      bad_step = tf.constant(0, tf.int64)
      for index in tf.range(num_packs, dtype=tf.int64):
        flags = train_pack(*next(iterator))
        if tf.reduce_any(flags > 0):
          bad_step = index * pack + tf.argmax(tf.cast(flags > 0, tf.int64)) + 1
          break
      return bad_step

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

  def _evaluate_batches_eager(self, dataset):
    for batch in dataset:
      self._strategy.run(self._replica_eval_step, args=batch)
