"""Keras on JAX: the runtime (keras.distribution) and the task (a jitted stateless step)."""
