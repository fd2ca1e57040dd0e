"""float16 loss scaling decided once for every replica and worker.

tests/spiking_model.py multiplies the gradient by 1000 on replica 1 only, so its float16
gradients overflow there and nowhere else until the loss scale has come down. Keras's own
LossScaleOptimizer reads "finite" from the first replica: the overflow was applied on 2 logical
CPUs (the weights turned NaN, exit 4) and two workers took different branches and hung.
"""

import json
import math
import os

import numpy as np
import pytest

from tests import processes
from tests import test_resume
from tests.processes import ROOT
from trainer import config as config_lib
from trainer import train

SPIKING_MODEL = os.path.join(ROOT, "tests", "spiking_model.py") + ":build"
INITIAL_SCALE = 2.0**15  # Keras's LossScaleOptimizer's.


def _spike_config(fashion_subset, tmp_path, name, **overrides) -> config_lib.Config:
  settings = dict(model=SPIKING_MODEL, dataset="fashion_mnist",
                  data_dir=str(fashion_subset / "idx"), epochs=1, batch_size=64,
                  max_steps_per_epoch=40, log_every=10, strategy="mirrored", cpu_devices=2,
                  precision="mixed_float16", workdir=str(tmp_path / name))
  settings.update(overrides)
  return config_lib.Config.from_flags(**settings)


@pytest.mark.slow
def test_an_overflow_on_replica_one_only_is_skipped_and_the_run_learns_as_in_float32(
    fashion_subset, tmp_path):
  # With the recipe's steps that read the gradient: accumulation (an overflow in any
  # micro-batch skips the update), clipping of the summed gradient and the moving average.
  recipe = dict(grad_accum_steps=2, clip_norm=5.0, ema_decay=0.9)
  scaled = train.train_and_evaluate(_spike_config(fashion_subset, tmp_path, "float16", **recipe))
  plain = train.train_and_evaluate(_spike_config(fashion_subset, tmp_path, "float32",
                                                 precision="float32", **recipe))
  assert scaled["skipped_steps"] >= 1
  assert scaled["loss_scale"] <= INITIAL_SCALE / 2**scaled["skipped_steps"]
  assert math.isfinite(scaled["train_loss"]) and math.isfinite(scaled["test_loss_ema"])
  assert scaled["test_accuracy"] > 0.6
  assert abs(scaled["test_accuracy"] - plain["test_accuracy"]) < 0.05
  assert plain["skipped_steps"] == 0 and plain["loss_scale"] is None
  for tag in ("loss_scale", "skipped_steps"):  # TensorBoard shows both at every log point.
    assert test_resume.logged_steps(tmp_path / "float16" / "train", tag) == [10, 20, 30, 40]


@pytest.mark.slow
def test_a_resumed_run_keeps_the_loss_scale_and_the_skip_count(fashion_subset, tmp_path):
  first = train.train_and_evaluate(_spike_config(fashion_subset, tmp_path, "run"))
  assert first["skipped_steps"] >= 1
  # A second epoch on the same workdir resumes at step 40. A scale started afresh at 2^15 would
  # overflow again and skip more; the restored one does not.
  resumed = train.train_and_evaluate(_spike_config(fashion_subset, tmp_path, "run", epochs=2))
  assert resumed["steps"] == 80
  assert resumed["skipped_steps"] == first["skipped_steps"]
  assert resumed["loss_scale"] == first["loss_scale"]


@pytest.mark.slow
def test_two_workers_skip_the_same_steps_when_only_the_second_overflows(spiking_cluster):
  # The shared two-worker run of the spiking model in mixed_float16 (conftest).
  outputs = spiking_cluster["outputs"]
  assert spiking_cluster["returncodes"] == [0, 0], outputs[1][-3000:]
  finals = [processes.FINAL_LINE.search(output).groups() for output in outputs]
  assert finals[0] == finals[1]  # The same final loss and bit-identical weights.
  assert all(math.isfinite(float(loss)) for loss, _ in finals)
  results = json.loads((spiking_cluster["workdir"] / "results.json").read_text())
  assert results["skipped_steps"] >= 1 and results["loss_scale"] < INITIAL_SCALE


def test_the_spike_reaches_replica_one_only():
  # The fault is what the tests above say it is: replica 1's gradient is 1000x replica 0's.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.distribute import distribution  # pylint: disable=g-import-not-at-top
  from tests import spiking_model  # pylint: disable=g-import-not-at-top
  strategy = distribution.make_strategy("mirrored")
  with strategy.scope():
    layer = spiking_model.ReplicaOneGradientSpike()

  @tf.function
  def gradients():
    def replica_gradient():
      values = tf.ones([3])
      with tf.GradientTape() as tape:
        tape.watch(values)
        output = tf.reduce_sum(layer(values))
      return tape.gradient(output, values)
    return strategy.experimental_local_results(strategy.run(replica_gradient))

  first, second = (np.asarray(values) for values in gradients())
  np.testing.assert_array_equal(first, np.ones(3))
  np.testing.assert_array_equal(second, np.full(3, spiking_model.SPIKE))
