"""The recipe in whole runs: accumulation equals one big batch, clipping after the replica sum,
the weights' moving average, the best model kept, evaluation inside epochs."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import config as config_lib
from trainer.distribute import distribution
from trainer import errors
from trainer.backends.tensorflow import averaging
from trainer.backends.tensorflow import task as task_lib
from trainer.records import best_model
from trainer.records import export
from trainer import train

# SGD with momentum, a warm-up and SGD's L2 weight decay: every term of the update that
# accumulation must keep (the L2 term is added once per micro-batch and must count once).
SGD_RECIPE = dict(optimizer="sgd", learning_rate=0.05, weight_decay=1e-3, warmup_steps=5)


def _final_weights(workdir) -> list:
  return [weight.numpy() for weight in export.load_keras_model(str(workdir)).weights]


def _assert_close(got: list, expected: list, rtol: float, atol: float) -> None:
  assert len(got) == len(expected)
  for a, b in zip(got, expected):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("settings", [
    dict(strategy="default"),  # The mlp's default: XLA, 10 steps per compiled pack.
    # float32 asked for: auto trains the mlp without XLA in bfloat16 on CPUs that have it.
    pytest.param(dict(strategy="default", jit_compile=False, precision="float32"),
                 marks=pytest.mark.slow),
    pytest.param(dict(strategy="mirrored", cpu_devices=2), marks=pytest.mark.slow)])
@pytest.mark.slow
def test_four_accumulation_steps_train_the_weights_of_one(settings, small_config, tmp_path):
  config = small_config.replace(**SGD_RECIPE, **settings)
  one = train.train_and_evaluate(config.replace(workdir=str(tmp_path / "k1")))
  four = train.train_and_evaluate(config.replace(grad_accum_steps=4,
                                                 workdir=str(tmp_path / "k4")))
  assert one["steps"] == four["steps"] == 20  # Steps count updates, not micro-batches.
  assert four["steps_per_xla_call"] == one["steps_per_xla_call"]
  assert four["recipe"]["grad_accum_steps"] == 4
  _assert_close(_final_weights(tmp_path / "k4"), _final_weights(tmp_path / "k1"),
                rtol=1e-4, atol=1e-6)
  assert four["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)


def test_accumulation_that_does_not_divide_the_replica_batch_is_refused():
  distribution.check_batch_size(64, 2, grad_accum_steps=4)  # 32 per replica: fine.
  with pytest.raises(errors.UserError, match=r"does not divide the batch of each of the 2 "
                                             r"replicas \(30"):
    distribution.check_batch_size(60, 2, grad_accum_steps=4)


@pytest.mark.slow
def test_clipping_under_mirrored_equals_clipping_in_one_replica(small_config, tmp_path):
  # A norm far below the gradient's, so every step clips: clipping each replica's share before
  # the sum (Keras's global_clipnorm) would make steps of up to twice the norm.
  config = small_config.replace(optimizer="sgd", momentum=0.0, learning_rate=0.5,
                                clip_norm=0.01, max_steps_per_epoch=10, jit_compile=False,
                                precision="float32")
  single = train.train_and_evaluate(config.replace(workdir=str(tmp_path / "1")))
  mirrored = train.train_and_evaluate(config.replace(strategy="mirrored", cpu_devices=2,
                                                     workdir=str(tmp_path / "2")))
  assert mirrored["num_replicas"] == 2
  _assert_close(_final_weights(tmp_path / "2"), _final_weights(tmp_path / "1"),
                rtol=1e-4, atol=1e-6)
  # The logged norm is the one before clipping, of the summed gradient.
  from tests.test_train import _scalar_steps  # pylint: disable=g-import-not-at-top
  norms = [value for _, value in _scalar_steps(str(tmp_path / "2" / "train"), "gradient_norm")]
  single_norms = [value for _, value in _scalar_steps(str(tmp_path / "1" / "train"),
                                                      "gradient_norm")]
  assert norms and min(norms) > 0.01
  np.testing.assert_allclose(norms, single_norms, rtol=1e-3)


def test_clipping_bounds_each_update_to_the_norm():
  config = config_lib.Config.from_flags(
      optimizer="sgd", momentum=0.0, learning_rate=1.0, clip_norm=0.5)
  from trainer.loop import optimization  # pylint: disable=g-import-not-at-top
  variable = keras.Variable(np.zeros((3,), np.float32))
  gradient_norm = keras.metrics.Mean()
  optimizer = optimization.make_optimizer(
      config.optim, optimization.learning_rate_schedule(
          config.optim, config.peak_learning_rate, config.loop.epochs, 100),
      [variable], gradient_norm)
  optimizer.apply_gradients([(tf.constant([3.0, 0.0, 4.0]), variable)])
  np.testing.assert_allclose(variable.numpy(), [-0.3, 0.0, -0.4], rtol=1e-6)  # 0.5 x g / |g|.
  assert float(gradient_norm.result()) == pytest.approx(5.0)


@pytest.mark.parametrize("strategy_name", ["default", "mirrored"])
def test_the_moving_average_equals_numpy_over_the_weight_history(strategy_name):
  strategy = distribution.make_strategy(strategy_name)
  with strategy.scope():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    average = averaging.WeightAverage(strategy, model.trainable_variables, decay=0.9)
  update = tf.function(average.update)
  rng = np.random.default_rng(0)
  expected = [variable.numpy() for variable in model.trainable_variables]
  for _ in range(5):
    for variable, shadow in zip(model.trainable_variables, expected):
      new = rng.normal(size=variable.shape).astype(np.float32)
      variable.assign(new)
      shadow -= 0.1 * (shadow - new)
    update()
  for got, want in zip(average.averages, expected):
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    if strategy_name == "mirrored":  # Every replica's copy the same.
      copies = [value.numpy() for value in got.values]
      assert len(copies) == 2 and np.array_equal(copies[0], copies[1])
  weights = [variable.numpy() for variable in model.trainable_variables]
  with average.swapped():
    for variable, want in zip(model.trainable_variables, expected):
      np.testing.assert_allclose(variable.numpy(), want, rtol=1e-6)
  for variable, before in zip(model.trainable_variables, weights):  # Restored exactly.
    np.testing.assert_array_equal(variable.numpy(), before)


@pytest.mark.slow
def test_a_run_evaluates_and_exports_the_moving_average(small_config, tmp_path):
  config = small_config.replace(ema_decay=0.9, export_ema=True, eval_every=10,
                                export_saved_model=True)
  results = train.train_and_evaluate(config)
  from tests.test_train import _scalar_steps  # pylint: disable=g-import-not-at-top
  assert [step for step, _ in _scalar_steps(os.path.join(config.output.workdir, "eval"),
                                            "accuracy_ema")] == [10, 20]
  assert results["test_accuracy_ema"] is not None and results["ema_weights_sha256"]
  assert results["ema_weights_sha256"] != results["weights_sha256"]
  # The export holds the average: its trainable weights are the checkpoint's EMA variables.
  exported = export.load_keras_model(config.output.workdir)
  reader = tf.train.load_checkpoint(os.path.join(config.output.workdir, "checkpoints"))
  averages = sorted((name for name in reader.get_variable_to_shape_map()
                     if name.startswith("ema/averages/") and name.endswith("VARIABLE_VALUE")),
                    key=lambda name: int(name.split("/")[2]))
  assert len(averages) == len(exported.trainable_weights)
  for name, weight in zip(averages, exported.trainable_weights):
    np.testing.assert_array_equal(reader.get_tensor(name), weight.numpy())
  images = tf.random.stateless_uniform((4, *results["image_shape"]), seed=(1, 2))
  loaded = export.load_saved_model(config.output.workdir)  # Referenced while it serves.
  np.testing.assert_allclose(loaded.serve(images), exported(images, training=False), atol=1e-6)


@pytest.mark.slow
def test_best_holds_the_best_epochs_model_after_a_later_epoch_got_worse(small_config, tmp_path,
                                                                         monkeypatch):
  real_evaluate = task_lib.Task.evaluate
  digests = []

  def evaluate_with_a_worse_last_epoch(self, *args, **kwargs):
    figures = real_evaluate(self, *args, **kwargs)
    digests.append(self.weights_sha256())
    return {**figures, "accuracy": [0.5, 0.9, 0.7][len(digests) - 1]}

  monkeypatch.setattr(task_lib.Task, "evaluate", evaluate_with_a_worse_last_epoch)
  config = small_config.replace(epochs=3, keep_best="accuracy", export_saved_model=True)
  results = train.train_and_evaluate(config)
  assert (results["best_step"], results["best_test_accuracy"]) == (40, 0.9)
  best_dir = os.path.join(config.output.workdir, "best")
  with open(os.path.join(best_dir, best_model.BEST_FILE)) as f:
    assert json.load(f)["step"] == 40
  best = export.load_keras_model(best_dir)
  assert task_lib._sha256(best.weights) == digests[1] != digests[2]  # pylint: disable=protected-access
  assert sorted(os.listdir(config.output.workdir)).count("best.tmp") == 0
  assert os.path.isdir(os.path.join(best_dir, "saved_model"))


def test_the_best_so_far_survives_a_restore(tmp_path):
  keeper = best_model.BestModel("/nonexistent", "loss", ema=False, is_chief=False,
                                write_exports=lambda folder: None)
  keeper.consider(10, {"loss": 0.5, "accuracy": 0.8})
  keeper.consider(20, {"loss": 0.7, "accuracy": 0.9})  # Worse loss: not kept.
  checkpoint = tf.train.Checkpoint(best=keeper)
  path = checkpoint.write(str(tmp_path / "best-restore-test"))
  restored = best_model.BestModel("/nonexistent", "loss", ema=False, is_chief=False,
                                  write_exports=lambda folder: None)
  tf.train.Checkpoint(best=restored).read(path).assert_consumed()
  assert restored.results() == {"best_step": 10, "best_test_accuracy": 0.8,
                                "best_test_loss": 0.5}
