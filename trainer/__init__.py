"""Train one MNIST classifier with any Keras model API under any tf.distribute strategy."""
