"""Cleanup on every way out: the watchdog, lost peers, and a non-chief worker's scratch folder."""

import os
import signal
import subprocess
import sys
import tempfile

import pytest
import tensorflow as tf

from tests.processes import ROOT
from trainer import config as config_lib
from trainer.distribute import device_plan
from trainer.distribute import distribution
from trainer.backends.tensorflow import runtime
from trainer import errors
from trainer.records import checkpointing
from trainer import train

CLUSTER_CONFIG = config_lib.Config.from_flags(strategy="multi_worker_mirrored",
                                   worker_hosts=("127.0.0.1:1", "127.0.0.1:2"), task_index=1)


class FakeWatchdog:
  instances = []

  def __init__(self, timeout_s, who):
    self.who, self.beats, self.stopped = who, 0, False
    FakeWatchdog.instances.append(self)

  def beat(self):
    self.beats += 1

  def compiling(self):
    self.beats += 1

  def stop(self):
    self.stopped = True


@pytest.fixture
def fake_cluster(monkeypatch):
  """A worker's runtime whose strategy is this process's default one (no real peers)."""
  FakeWatchdog.instances.clear()
  monkeypatch.setattr(runtime.watchdog_lib, "ProgressWatchdog", FakeWatchdog)
  monkeypatch.setattr(distribution, "make_strategy",
                      lambda name, tf_config, **devices: tf.distribute.get_strategy())
  return FakeWatchdog.instances


def one_replica_plan(config: config_lib.Config) -> device_plan.DevicePlan:
  """The plan of `config` on one worker of one CPU: the default strategy's single replica."""
  return device_plan.plan_run(config, device_plan.DeviceFacts(host_memory_bytes=2**34))


def test_the_watchdog_stops_when_the_run_fails(fake_cluster):
  with pytest.raises(errors.UserError, match="cannot be split"):
    config = CLUSTER_CONFIG.replace(batch_size=3, cpu_devices=1)
    with runtime.open_runtime(config, one_replica_plan(config)) as opened:
      del opened  # Unused: the body fails.
      raise errors.UserError("--batch_size=3 cannot be split")
  assert fake_cluster[0].stopped and fake_cluster[0].beats >= 1


def test_a_lost_peer_becomes_a_cluster_error_naming_this_worker(fake_cluster):
  with pytest.raises(errors.ClusterError, match=r"worker 1 of 2 \(127.0.0.1:2\) lost contact"):
    with runtime.open_runtime(CLUSTER_CONFIG, one_replica_plan(CLUSTER_CONFIG)) as opened:
      assert opened.settings.task == "worker 1 of 2 (127.0.0.1:2)"
      raise tf.errors.UnavailableError(None, None, "Socket closed")
  assert fake_cluster[0].stopped


def test_a_non_chief_removes_its_scratch_checkpoints_when_the_run_diverges(small_config,
                                                                        monkeypatch, tmp_path):
  scratch, mkdtemp = [], tempfile.mkdtemp

  def recorded_mkdtemp(prefix):
    scratch.append(mkdtemp(prefix=prefix, dir=tmp_path))
    return scratch[-1]

  monkeypatch.setattr(distribution, "is_chief", lambda strategy: False)
  monkeypatch.setattr(checkpointing.tempfile, "mkdtemp", recorded_mkdtemp)
  with pytest.raises(errors.Diverged):
    # An infinite learning rate makes the weights, then the loss, non-finite within steps.
    # Without XLA: what is tested is the folder's cleanup, and the compile would be most of the
    # test's time.
    train.train_and_evaluate(small_config.replace(learning_rate=float("inf"),
                                                  checkpoint_every=1, jit_compile=False))
  assert len(scratch) == 1 and not os.path.exists(scratch[0])


def test_the_real_watchdog_kills_a_stalled_process_run_from_a_checkout(tmp_path):
  # `python -S`: no site-packages, so the trainer package is found only in the checkout, as
  # for a user who runs it without installing; the watchdog's own process must find it too.
  stalled = subprocess.run(
      [sys.executable, "-S", "-c",
       f"import sys, time; sys.path.insert(0, {ROOT!r}); "
       "from trainer.distribute import watchdog; "
       "dog = watchdog.ProgressWatchdog(0.1, 'worker 1 of 2'); dog.beat(); time.sleep(10)"],
      cwd=tmp_path, capture_output=True, text=True, timeout=60)
  assert stalled.returncode == -signal.SIGKILL, stalled.stderr[-2000:]
  assert "error: worker 1 of 2 made no progress for 0 s" in stalled.stderr
