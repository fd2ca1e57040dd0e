"""Each backend's device rules (the device plan's decisions that differ by backend) are pure
functions of device facts and import no framework: a rule that imported TensorFlow or JAX could
ask it about devices, which the plan must decide before either starts. What each rule decides is
asserted in tests/test_device_plan.py."""

import json
import subprocess
import sys

from tests import processes
from trainer import config as config_lib

_PROBE = """
import json, sys
from trainer.backends import interface
for name in sys.argv[1:]:
  interface.device_rules(name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "jax", "keras"})))
"""


def test_every_backends_device_rules_import_no_framework():
  done = subprocess.run([sys.executable, "-c", _PROBE, *config_lib.BACKENDS], cwd=processes.ROOT,
                        capture_output=True, text=True, timeout=60)
  assert done.returncode == 0, done.stderr[-3000:]
  assert json.loads(done.stdout.strip().splitlines()[-1]) == []
