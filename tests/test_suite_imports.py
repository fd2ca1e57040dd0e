"""Collecting the suite starts no device: importing every test module, as pytest does before any
test runs, leaves TensorFlow's context and JAX's backends unstarted, and the conftest has set
memory growth by then. Otherwise a GPU machine's session starts TensorFlow on GPU:0 with growth
off, keeps most of it, and starves the runs the tests start in subprocesses."""

import pytest


# The collection runs in conftest.py's fresh process, as `pytest` collects before any test runs.
@pytest.mark.slow
def test_importing_every_test_module_starts_no_device(fresh_process_answers):
  assert fresh_process_answers["collection"] == {
      "collected": 0, "tensorflow": False, "jax": False, "growth": "true"}
