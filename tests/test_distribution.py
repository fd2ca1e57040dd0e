"""Strategies built by trainer.distribute.distribution, on the two logical CPU devices of
tests/conftest.py."""

import os

import numpy as np
import pytest
import tensorflow as tf

from trainer.distribute import distribution
from trainer.distribute import hardware


def _all_reduce_ones(strategy: tf.distribute.Strategy, size: int) -> np.ndarray:
  @tf.function
  def step():
    def replica():
      context = tf.distribute.get_replica_context()
      return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.ones([size]))
    return strategy.run(replica)
  return strategy.experimental_local_results(step())[0].numpy()


def test_mirrored_strategies_in_one_process_keep_their_collectives_apart():
  # With TensorFlow's shared collective keys the second strategy's all-reduce of another shape
  # fails with "Shape mismatch in the collective instance" (tensorflow#62790), as a second
  # model's gradient sum did in a notebook or in this test process.
  for size in (3, 5):
    strategy = distribution.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    np.testing.assert_array_equal(_all_reduce_ones(strategy, size), np.full(size, 2.0))


def test_a_cpu_the_process_split_itself_keeps_its_threads(monkeypatch):
  # As this test process split it (conftest.py): a run's split would fix the threads at a
  # device's share for every later run in the process, and a --deterministic run resumed here
  # from a killed process of its own then ended with other weights than the killed one's.
  monkeypatch.setattr(tf.config, "get_logical_device_configuration",
                      lambda device: [tf.config.LogicalDeviceConfiguration()] * 2)
  calls = []
  monkeypatch.setattr(tf.config, "set_logical_device_configuration",
                      lambda *args: calls.append("devices"))
  monkeypatch.setattr(tf.config.threading, "set_intra_op_parallelism_threads",
                      lambda threads: calls.append(f"{threads} threads"))
  hardware.split_cpu(2)
  assert calls == []


def test_a_run_on_threads_an_earlier_runs_split_shared_out_says_so(monkeypatch, caplog):
  # A notebook's mirrored run over --cpu_devices=2 on 8 cores, then a one-device run: TensorFlow
  # keeps the 4 threads the first one set for the rest of the process.
  monkeypatch.setattr(tf.config, "get_logical_device_configuration",
                      lambda device: [tf.config.LogicalDeviceConfiguration()] * 2)
  monkeypatch.setattr(os, "cpu_count", lambda: 8)
  monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 4)
  hardware.split_cpu(1)
  assert ("runs 4 intra-op threads of 8 cores, as an earlier run in it with --cpu_devices=2 "
          "left it") in caplog.text and "restart the kernel" in caplog.text
  caplog.clear()
  # This test process split its CPU itself and left the threads whole: nothing to say.
  monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 0)
  hardware.split_cpu(1)
  assert not caplog.text


@pytest.mark.slow
def test_a_split_cpu_gives_each_device_its_share_of_the_cores_as_threads(fresh_process_answers):
  # Without it, two logical devices each ran a thread per core: resnet18 under mirrored x2 lost
  # 10% to the oversubscription. A fresh process: threads are fixed when TensorFlow starts.
  assert fresh_process_answers["split_cpu_threads"] == max(1, os.cpu_count() // 2)
