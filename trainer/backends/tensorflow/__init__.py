"""Keras on TensorFlow: the runtime (tf.distribute strategies) and the task."""
