"""One home per Keras backend: tensorflow/ and jax/, each its runtime and task."""
