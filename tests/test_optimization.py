"""The training recipe: learning-rate schedules (milliseconds), optimizers, weight decay kept off
biases and BatchNorm, label smoothing, and bad values refused."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import config as config_lib
from trainer import errors
from trainer.loop import optimization


def rates(schedule, steps):
  return [float(schedule(tf.constant(step))) for step in steps]


def test_warmup_rises_linearly_from_zero_to_the_peak_then_stays():
  schedule = optimization.WarmupSchedule(0.4, total_steps=100, warmup_steps=10)
  np.testing.assert_allclose(rates(schedule, [0, 1, 5, 9, 10, 50, 99]),
                             [0.0, 0.04, 0.2, 0.36, 0.4, 0.4, 0.4], rtol=1e-6)


def test_cosine_after_warmup_falls_from_the_peak_to_zero_at_the_end():
  schedule = optimization.WarmupSchedule(1.0, total_steps=110, warmup_steps=10, kind="cosine")
  np.testing.assert_allclose(rates(schedule, [10, 60, 110]), [1.0, 0.5, 0.0], atol=1e-6)


def test_cosine_without_warmup_is_keras_cosine_decay_bit_for_bit():
  ours = optimization.WarmupSchedule(1e-3, total_steps=937, kind="cosine")
  keras_schedule = keras.optimizers.schedules.CosineDecay(1e-3, 937)
  for step in (0, 1, 100, 468, 936):
    assert float(ours(step)) == float(keras_schedule(step))


def test_linear_decays_to_zero_and_step_drops_tenfold_at_each_boundary():
  linear = optimization.WarmupSchedule(1.0, total_steps=100, kind="linear")
  np.testing.assert_allclose(rates(linear, [0, 25, 100]), [1.0, 0.75, 0.0], atol=1e-6)
  step = optimization.WarmupSchedule(0.1, total_steps=900, warmup_steps=50, kind="step",
                                     drop_steps=[300, 600, 800])
  np.testing.assert_allclose(rates(step, [25, 299, 300, 599, 600, 800, 899]),
                             [0.05, 0.1, 0.01, 0.01, 0.001, 0.0001, 0.0001], rtol=1e-5)


def _schedule(config, steps_per_epoch):
  return optimization.learning_rate_schedule(config.optim, config.peak_learning_rate,
                                             config.loop.epochs, steps_per_epoch)


def test_the_config_gives_warmup_epochs_drops_in_epochs_and_linear_scaling():
  config = config_lib.Config.from_flags(learning_rate=0.1, batch_size=1024, lr_scaling="linear",
                             warmup_epochs=5, lr_schedule="step", lr_drops=(30, 60, 80),
                             epochs=90)
  schedule = _schedule(config, steps_per_epoch=10)
  assert config.peak_learning_rate == pytest.approx(0.4)
  assert schedule.warmup_steps == 50 and schedule.drop_steps == (300, 600, 800)
  assert float(schedule(50)) == pytest.approx(0.4)


@pytest.mark.parametrize("settings, message", [
    (dict(warmup_epochs=3, epochs=3), "as long as the run"),
    (dict(lr_schedule="step", lr_drops=(2, 5), epochs=5), "at or past the last epoch"),
])
def test_a_schedule_that_cannot_run_is_refused(settings, message):
  with pytest.raises(errors.UserError, match=message):
    _schedule(config_lib.Config.from_flags(**settings), steps_per_epoch=10)


@pytest.mark.parametrize("settings, message", [
    (dict(weight_decay=-1e-4), "is negative"),
    (dict(momentum=1.0), "must lie in"),
    (dict(label_smoothing=1.0), "must lie in"),
    (dict(nesterov=True), "--nesterov is SGD's"),
    (dict(warmup_steps=10, warmup_epochs=1), "Give the warm-up once"),
    (dict(lr_schedule="step"), "go together"),
    (dict(lr_drops=(30,)), "go together"),
    (dict(lr_schedule="step", lr_drops=(60, 30)), "must be increasing"),
    (dict(clip_norm=-1.0), "--clip_norm=-1.0 is negative"),
    (dict(batch_size=64, grad_accum_steps=3), "must be 1 or more and divide --batch_size=64"),
    (dict(grad_accum_steps=0), "must be 1 or more"),
    (dict(ema_decay=1.0), "--ema_decay=1.0 must lie in"),
    (dict(export_ema=True), "add --ema_decay"),
    (dict(eval_every=-5), "--eval_every=-5 counts steps"),
])
def test_bad_recipe_values_are_refused_with_one_line(settings, message):
  with pytest.raises(errors.UserError, match=message):
    config_lib.Config.from_flags(**settings)


def _tiny_model():
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense"),
                            keras.layers.BatchNormalization(name="bn"),
                            keras.layers.Dense(2, name="out")])
  return model


def test_sgd_with_nesterov_momentum_updates_as_the_formula_says():
  config = config_lib.Config.from_flags(
      optimizer="sgd", momentum=0.9, nesterov=True, learning_rate=0.1)
  model = _tiny_model()
  optimizer = optimization.make_optimizer(
      config.optim, _schedule(config, 100), model.trainable_variables)
  kernel = model.get_layer("dense").kernel
  start = kernel.numpy()
  velocity = np.zeros_like(start)
  expected = start.copy()
  for step in range(3):
    gradient = np.full_like(start, 0.5 + step)
    optimizer.apply_gradients([(tf.constant(gradient), kernel)])
    # Keras's (and PyTorch's) Nesterov form: v = m v - lr g; w += m v - lr g.
    velocity = 0.9 * velocity - 0.1 * gradient
    expected = expected + 0.9 * velocity - 0.1 * gradient
    np.testing.assert_allclose(kernel.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_decoupled_weight_decay_shrinks_kernels_and_leaves_biases_and_batchnorm_alone(optimizer):
  config = config_lib.Config.from_flags(optimizer=optimizer, weight_decay=0.1, learning_rate=0.5)
  model = _tiny_model()
  variables = model.trainable_variables
  optimizer = optimization.make_optimizer(
      config.optim, _schedule(config, 100), variables)
  before = {variable.path: variable.numpy() for variable in variables}
  optimizer.apply_gradients([(tf.zeros_like(variable), variable) for variable in variables])
  for variable in variables:
    if len(variable.shape) == 1:  # Biases, gamma and beta: untouched.
      np.testing.assert_array_equal(variable.numpy(), before[variable.path], variable.path)
    else:  # Kernels: decayed by learning rate x decay, as no gradient moved them.
      np.testing.assert_allclose(variable.numpy(), before[variable.path] * (1 - 0.5 * 0.1),
                                 rtol=1e-6)
  assert sorted(v.path.split("/", 1)[1] for v in optimization.no_decay_variables(variables)) == [
      "bn/beta", "bn/gamma", "dense/bias", "out/bias"]


def test_sgd_weight_decay_is_an_l2_gradient_on_kernels_only_summed_once_over_replicas():
  model = _tiny_model()
  variables = model.trainable_variables
  decayed = optimization.decayed_variables(variables)
  assert sorted(v.path.split("/", 1)[1] for v in decayed) == ["dense/kernel", "out/kernel"]
  with tf.GradientTape() as tape:
    # One of two replicas' shares: summed over both, the gradient is decay * weight.
    loss = optimization.l2_loss(decayed, 1e-4, num_shares=2)
  gradients = tape.gradient(loss, [variable.value for variable in variables],
                            unconnected_gradients=tf.UnconnectedGradients.ZERO)
  for variable, gradient in zip(variables, gradients):
    summed = 2 * gradient.numpy()
    if len(variable.shape) > 1:
      np.testing.assert_allclose(summed, 1e-4 * variable.numpy(), rtol=1e-5)
    else:
      assert not summed.any(), variable.path
