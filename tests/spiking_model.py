"""An mlp whose hidden layer multiplies its gradient by 1000 on replica 1 only: a float16
overflow that only the second replica (or the second worker) sees.

  python -m trainer.main --model=tests/spiking_model.py:build --precision=mixed_float16 ...

Forward it is the blog's mlp; backward, replica 1's gradient through the hidden activations is
scaled by SPIKE, so under loss scaling it overflows float16 until the scale has come down.
"""

import keras
import tensorflow as tf

SPIKE = 1000.0


@keras.saving.register_keras_serializable(package="tests")
class ReplicaOneGradientSpike(keras.layers.Layer):
  """The identity, whose gradient is multiplied by SPIKE on replica 1 of the sync group."""

  def call(self, inputs):
    @tf.custom_gradient
    def identity(values):
      def gradient(upstream):
        context = tf.distribute.get_replica_context()
        replica = 0 if context is None else context.replica_id_in_sync_group
        factor = tf.where(tf.equal(tf.cast(replica, tf.int32), 1), SPIKE, 1.0)
        return upstream * tf.cast(factor, upstream.dtype)
      return tf.identity(values), gradient
    return identity(inputs)


def build(input_shape, num_classes):
  """The blog's mlp with the spike between its hidden layer and its ReLU."""
  return keras.Sequential([
      keras.Input(shape=input_shape),
      keras.layers.Flatten(),
      keras.layers.Dense(128),
      ReplicaOneGradientSpike(),
      keras.layers.ReLU(),
      keras.layers.Dense(num_classes),
  ])
