"""Collecting the suite starts no device: importing every test module, as pytest does before any
test runs, leaves TensorFlow's context and JAX's backends unstarted, and the conftest has set
memory growth by then. Otherwise a GPU machine's session starts TensorFlow on GPU:0 with growth
off, keeps most of it, and starves the runs the tests start in subprocesses."""

import json
import subprocess
import sys

import pytest

from tests import processes

# pytest collects the suite in a process of its own, as `pytest` does before running a test;
# then the probe reads whether a framework started its devices.
_PROBE = """
import json, os, sys
import pytest
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests"])
from tensorflow.python.eager import context
bridge = sys.modules.get("jax._src.xla_bridge")
print(json.dumps({"collected": int(code), "tensorflow": context.context()._context_handle is not None,
                  "jax": bool(bridge is not None and bridge._backends),
                  "growth": os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH")}))
"""


@pytest.mark.slow
def test_importing_every_test_module_starts_no_device():
  done = subprocess.run([sys.executable, "-c", _PROBE],
                        cwd=processes.ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  started = json.loads(done.stdout.strip().splitlines()[-1])
  assert started == {"collected": 0, "tensorflow": False, "jax": False, "growth": "true"}
