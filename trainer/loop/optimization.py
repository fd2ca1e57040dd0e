"""The optimizer of a run and its learning rate: the recipe ResNets are trained with.

  --optimizer      adam, adamw or sgd (--momentum, --nesterov)
  --weight_decay   never on biases or normalisation parameters. With sgd, an L2 term in the
                   loss whose gradient is decay * var, so it goes through the momentum: the form
                   Model Garden and torchvision train ResNets with, where 1e-4 is the standard
                   value. With adam and adamw, decoupled (var -= learning_rate * decay * var at
                   every update: AdamW's form, Loshchilov and Hutter 2019).
  --learning_rate  the peak; --lr_scaling=linear multiplies it by global batch / 256 (Goyal et
                   al., "Accurate, Large Minibatch SGD", 2017)
  --warmup_steps / --warmup_epochs   linear from 0 to the peak (Goyal et al.)
  --lr_schedule    after the warm-up: constant, cosine (to 0), linear (to 0), step (x0.1 at each
                   of --lr_drops epochs)
  --clip_norm      the gradient's global norm, clipped after the sum over replicas

The schedule is a function of the optimizer's step count, which the checkpoint restores, so a
resumed run continues the same curve.
"""

import math
from typing import List, Optional, Sequence

from absl import logging
import keras
from keras import ops
import tensorflow as tf

from trainer import config as config_lib
from trainer import errors

STEP_DROP = 0.1  # --lr_schedule=step multiplies by this at each of --lr_drops.


@keras.saving.register_keras_serializable(package="trainer")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """A linear warm-up from 0 over `warmup_steps`, then `kind` (constant, cosine, linear or step)
  from `peak` over the rest of `total_steps`; `drop_steps` are the steps of step's drops."""

  def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0,
               kind: str = "constant", drop_steps: Sequence[int] = ()):
    super().__init__()
    self.peak, self.total_steps = float(peak), int(total_steps)
    self.warmup_steps = int(warmup_steps)
    self.kind, self.drop_steps = kind, tuple(int(step) for step in drop_steps)

  def __call__(self, step):
    # The optimizer passes its iteration count: the step about to be taken, from 0. keras.ops,
    # so the same schedule runs inside TensorFlow's and JAX's compiled steps.
    step = ops.cast(step, "float32")
    warmup = float(self.warmup_steps)
    decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
    progress = ops.clip((step - warmup) / decay_steps, 0.0, 1.0)
    if self.kind == "cosine":
      # In keras.optimizers.schedules.CosineDecay's order of operations, so that runs from
      # before the warm-up existed keep their weights bit for bit.
      after = self.peak * (0.5 * (1.0 + ops.cos(math.pi * progress)))
    elif self.kind == "linear":
      after = self.peak * (1.0 - progress)
    elif self.kind == "step":
      drops = ops.sum(ops.cast(step >= ops.convert_to_tensor(self.drop_steps or (2**31,),
                                                             "float32"), "float32"))
      after = self.peak * ops.power(STEP_DROP, drops)
    else:
      after = ops.convert_to_tensor(self.peak, "float32")
    if not self.warmup_steps:
      return after
    # From 0 at step 0, as Model Garden's LinearWarmup: the peak is reached at warmup_steps.
    return ops.where(step < warmup, self.peak * step / warmup, after)

  def get_config(self) -> dict:
    return {"peak": self.peak, "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps, "kind": self.kind,
            "drop_steps": list(self.drop_steps)}


def learning_rate_schedule(optim: config_lib.OptimConfig, peak_learning_rate: float,
                           epochs: int, steps_per_epoch: int) -> WarmupSchedule:
  """The schedule of `optim` from `peak_learning_rate` (config.Config.peak_learning_rate) for
  `epochs` of `steps_per_epoch`; refuses one that cannot run."""
  total_steps = epochs * steps_per_epoch
  warmup_steps = optim.warmup_steps or optim.warmup_epochs * steps_per_epoch
  if warmup_steps >= total_steps:
    raise errors.UserError(
        f"The warm-up ({warmup_steps} steps) is as long as the run ({total_steps} steps: "
        f"{epochs} epochs of {steps_per_epoch}). Shorten --warmup_steps or "
        "--warmup_epochs, or train for more --epochs.")
  if optim.lr_drops and max(optim.lr_drops) >= epochs:
    raise errors.UserError(
        f"--lr_drops={','.join(map(str, optim.lr_drops))} drops the learning rate at or past "
        f"the last epoch ({epochs}); give epochs between 1 and {epochs - 1}.")
  return WarmupSchedule(peak_learning_rate, total_steps, warmup_steps,
                        optim.lr_schedule, [epoch * steps_per_epoch
                                            for epoch in optim.lr_drops])


def no_decay_variables(variables: Sequence[tf.Variable]) -> List[tf.Variable]:
  """The variables weight decay leaves alone: biases and normalisation scales and offsets, that
  is every variable of one dimension (the rule of Goyal et al. and timm)."""
  return [variable for variable in variables if len(variable.shape) <= 1]


def decayed_variables(variables: Sequence[tf.Variable]) -> List[tf.Variable]:
  """The variables weight decay applies to: every one of more than one dimension."""
  excluded = {id(variable) for variable in no_decay_variables(variables)}
  return [variable for variable in variables if id(variable) not in excluded]


def _taking_summed_gradients(optimizer_class: type, clip_norm: float,
                             gradient_norm: Optional[keras.metrics.Mean]) -> type:
  """`optimizer_class`, given gradients the task has already summed over replicas (so it does
  not all-reduce them again), clipping their global norm to `clip_norm` where set and recording
  the norm before clipping in `gradient_norm`.

  The task sums first so that everything decided from the gradients is decided once, from the
  same values on every replica and worker: loss scaling's "finite" (Keras's LossScaleOptimizer
  reads it from the first replica before its inner optimizer's all-reduce, so an overflow on
  another replica was applied, and workers took different branches and hung) and clipping
  (Keras's own `global_clipnorm` clips each replica's share before the sum, so the sum could
  reach replicas x clip_norm). Clipping here makes every replica clip the same summed gradient:
  the update a single replica makes with the whole batch.
  """
  class TakesSummedGradients(optimizer_class):

    def _all_reduce_sum_gradients(self, grads_and_vars):
      summed = list(grads_and_vars)  # The task's all-reduce already ran.
      if not clip_norm:
        return summed
      clipped, norm = tf.clip_by_global_norm([gradient for gradient, _ in summed], clip_norm)
      if gradient_norm is not None:
        gradient_norm.update_state(norm)
      return list(zip(clipped, [variable for _, variable in summed]))

  TakesSummedGradients.__name__ = f"{optimizer_class.__name__}TakingSummedGradients"
  return TakesSummedGradients


class LossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
  """Keras's dynamic loss scaling (halve the scale and skip the update on a non-finite
  gradient, double it after 2,000 finite steps), counting the updates it skipped.

  It must be given gradients already summed over replicas (see `_taking_summed_gradients`):
  then every replica and every worker sees the same "finite" and takes the same branch. The
  scale, its growth counter and the count are optimizer variables, so the checkpoint keeps them.
  """

  def build(self, var_list):
    super().build(var_list)
    self.skipped_steps = self.add_variable(shape=(), dtype="int", initializer="zeros",
                                           aggregation="none", name="skipped_steps")

  def _stateful_handle_non_finite_grads(self):
    super()._stateful_handle_non_finite_grads()
    self.skipped_steps.assign_add(1)

  def _stateless_handle_non_finite_grads(self, optimizer_variables, trainable_variables):
    # JAX's step: Keras's own halving of the scale, and the count.
    mapping = list(zip(self.variables, optimizer_variables))
    with keras.StatelessScope(state_mapping=mapping) as scope:
      self.step_counter.assign(0)
      self.dynamic_scale.assign(ops.multiply(self.dynamic_scale, 0.5))
      self.skipped_steps.assign_add(1)
    return trainable_variables, [scope.get_current_value(v) for v in self.variables]


def make_optimizer(optim: config_lib.OptimConfig, schedule: WarmupSchedule,
                   variables: Sequence[tf.Variable],
                   gradient_norm: Optional[keras.metrics.Mean] = None,
                   loss_scaling: bool = False,
                   global_gradient: bool = False) -> keras.optimizers.Optimizer:
  """The --optimizer of `optim`, for gradients summed over replicas by the caller; adam's and
  adamw's decoupled weight decay kept off `no_decay_variables` (sgd's is `l2_loss`, added to
  the loss); under --clip_norm the summed gradient clipped, its norm before clipping recorded
  in `gradient_norm` (on JAX: Keras's global_clipnorm on the global gradient, the norm recorded
  by the task); with `loss_scaling`, wrapped in dynamic loss scaling and built.
  `global_gradient`: the step's gradient is the global batch's already (JAX's one SPMD
  program), so Keras's own clipping applies; otherwise each replica's gradients are summed
  first (`_taking_summed_gradients`)."""
  decoupled: Optional[float] = (optim.weight_decay or None) if optim.optimizer != "sgd" else None
  if optim.optimizer == "sgd":
    optimizer_class, settings = keras.optimizers.SGD, dict(momentum=optim.momentum,
                                                           nesterov=optim.nesterov)
  elif optim.optimizer == "adamw" and decoupled:
    optimizer_class, settings = keras.optimizers.AdamW, dict(weight_decay=decoupled)
  else:  # AdamW without decay is Adam.
    optimizer_class, settings = keras.optimizers.Adam, dict(weight_decay=decoupled)
  if not global_gradient:
    optimizer_class = _taking_summed_gradients(optimizer_class, optim.clip_norm, gradient_norm)
  elif optim.clip_norm:
    # Keras's own clipping of the global norm then clips the sum, after loss scaling's
    # unscaling.
    settings["global_clipnorm"] = optim.clip_norm
  optimizer = optimizer_class(schedule, **settings)
  excluded = no_decay_variables(variables)
  if decoupled:
    optimizer.exclude_from_weight_decay(var_list=excluded)
  if optim.weight_decay:
    logging.info("Weight decay %g (%s) on %d variables; not on %d biases and normalisation "
                 "parameters: %s", optim.weight_decay,
                 "L2 in the loss" if optim.optimizer == "sgd" else "decoupled",
                 len(variables) - len(excluded), len(excluded),
                 errors.summarized([variable.path for variable in excluded]))
  if loss_scaling:
    optimizer = LossScaleOptimizer(optimizer)
  optimizer.build(variables)
  return optimizer


def sum_over_replicas(gradients: Sequence[Optional[tf.Tensor]]) -> List[Optional[tf.Tensor]]:
  """The gradients summed over every replica of every worker (None stays None); call it in a
  replica context. Every replica gets the same sums, so what is decided from them (skip the
  update, clip) is decided alike everywhere."""
  context = tf.distribute.get_replica_context()
  present = [gradient for gradient in gradients if gradient is not None]
  if context is None or not present:
    return list(gradients)
  summed = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
  return [None if gradient is None else next(summed) for gradient in gradients]


def l2_loss(variables: Sequence, weight_decay: float, num_shares: int):
  """SGD's weight decay as the loss term of one share of an update: 0.5 * decay * sum of
  squares, divided by the shares (replicas x accumulation steps), so that the gradient summed
  over them is decay * var (as Model Garden scales its regularisation losses). `variables` are
  Keras variables or, in a JAX step, their values."""
  squares = sum(ops.sum(ops.square(ops.cast(variable, "float32"))) for variable in variables)
  return 0.5 * weight_decay * squares / num_shares


def loss_functions(from_logits: bool, label_smoothing: float, num_classes: int):
  """(test loss, training loss), each per example: sparse cross-entropy, and for training the
  cross-entropy on `label_smoothing`-smoothed one-hot targets when it is set."""
  plain = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits, reduction=None)
  if not label_smoothing:
    return plain, plain
  smoothed = keras.losses.CategoricalCrossentropy(
      from_logits=from_logits, label_smoothing=label_smoothing, reduction=None)
  return plain, lambda labels, outputs: smoothed(keras.ops.one_hot(labels, num_classes), outputs)
