"""Every run measures how long its loop waited for the next batch, and says when it was
input-bound."""

import time

import pytest
import tensorflow as tf

from trainer import config as config_lib
from trainer.data import input_pipeline
from trainer import train


@pytest.mark.slow
def test_a_run_whose_input_is_slow_reports_its_wait_and_says_it_was_input_bound(
    fashion_mnist_dir, tmp_path, monkeypatch, capsys):
  made = input_pipeline.InputPipeline.training_batches

  def slowed(self, *args, **kwargs):
    # Each element (a pack of steps) takes 0.5 s more to make than the steps take to train:
    # long enough that the elements tf.data makes ahead while the first call compiles (seconds
    # on a loaded machine, when 0.1 s let it make all 12 before the timed steps) cannot cover
    # the wait.
    dataset = made(self, *args, **kwargs)
    shape = dataset.element_spec[0].shape

    def pause(images):
      time.sleep(0.5)
      return images
    return dataset.map(lambda images, labels: (tf.ensure_shape(tf.numpy_function(
        pause, [images], tf.float32, stateful=True), shape), labels))

  monkeypatch.setattr(input_pipeline.InputPipeline, "training_batches", slowed)
  results = train.train_and_evaluate(config_lib.Config.from_flags(
      dataset="fashion_mnist", data_dir=str(fashion_mnist_dir), epochs=1, batch_size=64,
      max_steps_per_epoch=300, log_every=100, strategy="default", workdir=str(tmp_path)))
  assert results["input_wait_share"] > 0.5
  assert "Input-bound: the loop waited for the next batch" in capsys.readouterr().out
