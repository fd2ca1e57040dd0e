"""An exponential moving average of the trainable weights (--ema_decay), and swapping it in.

After every update, average -= (1 - decay) * (average - weight): tf.train's
ExponentialMovingAverage, starting from the initial weights. The average is kept for the
trainable weights only, as Keras's own `use_ema` and Model Garden's ExponentialMovingAverage
keep it; BatchNorm's moving statistics are already averages and stay the live ones. It is
updated in the cross-replica context, after the step, with the same values on every replica, so
its copies stay identical as the weights' do. A tf.Module: the checkpoint holds it.
"""

import contextlib
from typing import Iterator, Sequence

import tensorflow as tf


class WeightAverage(tf.Module):
  """The moving average of `variables` (Keras variables); create it under the strategy's scope."""

  def __init__(self, strategy: tf.distribute.Strategy, variables: Sequence, decay: float):
    super().__init__(name="weight_average")
    self._strategy, self._decay = strategy, float(decay)
    self._variables = list(variables)
    self.averages = [tf.Variable(tf.identity(variable.value), trainable=False,
                                 name=variable.path.replace("/", "_") + "_ema")
                     for variable in self._variables]

  def update(self) -> None:
    """Moves the average toward the weights; call it after each update, outside strategy.run."""
    rate = 1.0 - self._decay

    def move(average, weight):
      return average.assign_sub(rate * (average - weight))

    for average, variable in zip(self.averages, self._variables):
      self._strategy.extended.update(average, move, args=(variable.value,), group=False)

  def swap(self) -> None:
    """Exchanges the weights and their average (exact copies, so two swaps restore both)."""
    for average, variable in zip(self.averages, self._variables):
      weights = tf.identity(variable.value)
      variable.assign(average)
      average.assign(weights)

  @contextlib.contextmanager
  def swapped(self) -> Iterator[None]:
    """The model holds the average inside the block, its own weights again after it."""
    self.swap()
    try:
      yield
    finally:
      self.swap()
