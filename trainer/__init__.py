"""Train image classifiers with any Keras model API under any tf.distribute strategy."""
