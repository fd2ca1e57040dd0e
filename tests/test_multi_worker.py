"""MultiWorkerMirroredStrategy with real worker processes on 127.0.0.1, and its failure bounds.

A worker is a process of its own, seconds of imports and start-up whatever it trains, so each
cluster below runs once and every test that only reads what it did shares it: the users' model
per backend (the TensorFlow one also reports the rows its replicas receive), and the SIGTERMed
run that the launcher resumes. The spiking model's cluster, shared with
test_loss_scaling.py and test_tfrecords.py, is conftest's.
"""

import ipaddress
import json
import os
import re
import runpy
import signal
import subprocess
import sys
import time

import pytest

from tests import shard_probe
from tests.processes import FINAL_LINE
from tests.processes import ROOT
from tests.processes import local_hosts
from tests.processes import start_worker
from trainer import config as config_lib
from trainer.backends.tensorflow import task as task_lib
from trainer.data import input_pipeline
from trainer.distribute import cluster
from trainer.distribute import device_plan
from trainer.distribute import distribution
from trainer import errors
from trainer.loop import schedule
from trainer import train
from trainer.records import events as events_lib
from trainer.records import run_record

LAUNCHER = os.path.join(ROOT, "scripts", "launch_local.py")
USERS_MODEL = "examples/residual_subclass.py:build"
PROBED_BATCHES = 3


def listening_addresses(port: int) -> set:
  """The local addresses of TCP sockets listening on `port`, read from /proc/net/tcp{,6}."""
  found = set()
  for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
    with open(table) as f:
      for line in f.readlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, local_port = local.split(":")
        if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN.
          found.add(str(ipaddress.ip_address(bytes.fromhex(address)[::-1] if width == 8 else
                                             _tcp6_bytes(address))))
  return found


def _tcp6_bytes(address: str) -> bytes:
  # /proc/net/tcp6 writes the 16 bytes as four host-order (little-endian) 32-bit words.
  return b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, 32, 8))


def _finished(workers, timeout: float) -> list:
  """Each worker's output once all have ended; any still running at `timeout` is killed."""
  try:
    return [worker.communicate(timeout=timeout)[0] for worker in workers]
  finally:
    for worker in workers:
      worker.kill()


def _wait_for(condition, workers, what: str, seconds: float = 120) -> None:
  """Waits until `condition()`; fails with the chief's output, all workers killed, if the chief
  ends first or `seconds` pass."""
  deadline = time.monotonic() + seconds
  while not condition():
    if time.monotonic() > deadline or workers[0].poll() is not None:
      for worker in workers:
        worker.kill()
      pytest.fail(f"no {what} in time:\n" + _finished(workers, timeout=30)[0][-3000:])
    time.sleep(0.05)


def _users_model_cluster(backend: str, data_dir: str, root, *flags: str,
                         module: str = "trainer.main") -> dict:
  """Two workers of `backend` train the user's subclassed model for 20 steps, each in a workdir
  and a TMPDIR of its own (on one disk the non-chief's would stay empty)."""
  hosts = local_hosts(2)
  temp_dirs = [root / f"tmp{index}" for index in range(2)]
  for temp_dir in temp_dirs:
    temp_dir.mkdir()
  workers = [start_worker(hosts, index, *flags, "--strategy=multi_worker_mirrored",
                          f"--backend={backend}", f"--model={USERS_MODEL}",
                          "--dataset=fashion_mnist", f"--data_dir={data_dir}", "--epochs=1",
                          "--max_steps_per_epoch=20", "--log_every=10", "--checkpoint_every=10",
                          "--num_test_examples=128", f"--workdir={root / f'worker{index}'}",
                          module=module, temp_dir=temp_dirs[index]) for index in range(2)]
  outputs = _finished(workers, timeout=300)
  return {"root": root, "temp_dirs": temp_dirs, "outputs": outputs,
          "returncodes": [worker.returncode for worker in workers]}


@pytest.fixture(scope="module")
def tensorflow_cluster(fashion_subset, tmp_path_factory) -> dict:
  """The users' model on TensorFlow, two CPU devices a worker (four replicas of 16 examples),
  crop_flip, run as tests.shard_probe: each worker prints the rows of the first global batches
  its replicas get."""
  return _users_model_cluster(
      "tensorflow", str(fashion_subset / "idx"), tmp_path_factory.mktemp("tensorflow_cluster"),
      str(PROBED_BATCHES), "--cpu_devices=2", "--batch_size=64", "--augment=crop_flip",
      module="tests.shard_probe")


@pytest.fixture(scope="module")
def jax_cluster(fashion_subset, tmp_path_factory) -> dict:
  """The users' model on JAX, one device a worker."""
  return _users_model_cluster("jax", str(fashion_subset / "idx"),
                              tmp_path_factory.mktemp("jax_cluster"))


@pytest.mark.slow
@pytest.mark.parametrize("backend, replicas", [("tensorflow", 4), ("jax", 2)])
def test_two_workers_train_a_users_model_in_sync_and_only_the_chief_writes(backend, replicas,
                                                                         request):
  assert tuple(config_lib.BACKENDS) == ("tensorflow", "jax")  # Each backend has its cluster.
  run = request.getfixturevalue(f"{backend}_cluster")
  outputs, root = run["outputs"], run["root"]
  assert run["returncodes"] == [0, 0], outputs[1][-3000:]
  finals = [FINAL_LINE.search(output).groups() for output in outputs]
  assert finals[0] == finals[1]  # Same final loss and bit-identical weights on both workers.

  chief_results = json.loads((root / "worker0" / "results.json").read_text())
  assert chief_results["num_replicas"] == replicas
  assert chief_results["strategy"] == "multi_worker_mirrored"
  assert chief_results["backend"] == backend
  assert chief_results["api"] == "subclass"  # Detected from the user's model.
  assert chief_results["weights_sha256"] == finals[0][1]
  assert os.listdir(root / "worker0" / "train")
  assert {"checkpoints", "model.keras", "saved_model"} <= set(os.listdir(root / "worker0"))
  assert not (root / "worker1").exists() or not os.listdir(root / "worker1")
  # The non-chief saved its share of each checkpoint to a temporary folder, then removed it.
  assert [os.listdir(temp_dir) for temp_dir in run["temp_dirs"]] == [[], []]


@pytest.mark.slow
def test_each_worker_receives_its_slice_of_every_global_batch(tensorflow_cluster, fashion_subset):
  # Each worker's own pipeline decodes and augments only its rows of each global batch, and its
  # two replicas get them in order: the rows one process gives the same replicas
  # (tests/test_input_sharding.py checks every source).
  outputs = tensorflow_cluster["outputs"]
  assert tensorflow_cluster["returncodes"] == [0, 0], outputs[1][-3000:]
  seen = [json.loads(next(line[len(shard_probe.PREFIX):] for line in output.splitlines()
                          if line.startswith(shard_probe.PREFIX)))["batches"]
          for output in outputs]
  pipeline = input_pipeline.make_input_pipeline(config_lib.Config.from_flags(
      dataset="fashion_mnist", data_dir=str(fashion_subset / "idx"), batch_size=64,
      augment="crop_flip").data)
  expected = [[shard_probe.image_digest(image) for image in images.numpy()]
              for images, _ in pipeline.train_dataset(epoch=0).take(PROBED_BATCHES)]
  assert [len(batches) for batches in seen] == [PROBED_BATCHES] * 2
  for batch, (first, second) in enumerate(zip(*seen)):
    assert len(first) == len(second) == 32
    assert first + second == expected[batch]  # Bit-identical, row for row.


# ---------------------------------------------------------------- Preempted, resumed, rerun.
PREEMPTED_FLAGS = ("--dataset=synthetic", "--epochs=1", "--max_steps_per_epoch=120",
                   "--batch_size=64", "--checkpoint_every=20", "--steps_per_loop=10",
                   "--log_every=50")


@pytest.fixture(scope="module")
def preempted_cluster(tmp_path_factory) -> dict:
  """Two workers on one shared workdir, as on a cluster's shared disk: the non-chief SIGTERMed
  once a checkpoint exists; then the launcher reruns the same command, which resumes and
  finishes. The outputs of both."""
  run = tmp_path_factory.mktemp("preempted") / "run"
  flags = (*PREEMPTED_FLAGS, f"--workdir={run}")
  hosts = local_hosts(2)
  workers = [start_worker(hosts, index, "--strategy=multi_worker_mirrored", *flags)
             for index in range(2)]
  checkpoints = run / "checkpoints"
  _wait_for(lambda: checkpoints.is_dir() and any(name.endswith(".index")
                                                 for name in os.listdir(checkpoints)),
            workers, "checkpoint")
  workers[1].send_signal(signal.SIGTERM)  # Preemption of the non-chief only.
  preempted = _finished(workers, timeout=120)
  launch = [sys.executable, LAUNCHER, "--workers=2", "--", *flags]
  resumed = subprocess.run(launch, cwd=ROOT, capture_output=True, text=True, timeout=240)
  return {"run": run, "preempted": preempted,
          "preempted_returncodes": [worker.returncode for worker in workers], "resumed": resumed}


@pytest.mark.slow
def test_sigterm_to_one_worker_stops_all_at_one_step(preempted_cluster):
  outputs = preempted_cluster["preempted"]
  assert preempted_cluster["preempted_returncodes"] == [143, 143], outputs[0][-2000:]
  saved = [re.search(r"saved at step (\d+) of 120", output).group(1) for output in outputs]
  assert saved[0] == saved[1]  # Both saved the same step.
  assert "Stopped by a signal to another worker" in outputs[0]


@pytest.mark.slow
def test_the_launcher_resumes_a_preempted_run_bit_identical_and_quietly(preempted_cluster,
                                                                       tmp_path):
  resumed, run = preempted_cluster["resumed"], preempted_cluster["run"]
  assert resumed.returncode == 0, resumed.stdout[-3000:]
  lines = resumed.stdout.splitlines()
  assert any(line.startswith("[worker 0] ") for line in lines)
  assert any(line.startswith("[worker 1] ") for line in lines)
  # Nothing a user would take for an error: no C++ error lines (the coordination service's
  # "Connection refused" at shutdown was one), no CUDA or oneDNN notes, no Python warnings, and
  # no deprecation warning of our own making where a resume reads its TensorBoard files.
  noise = re.compile(r"\] [EW]\d{4}|^\[worker \d\] [EWF]\d{4} |Connection refused|cuInit|cuda|"
                     r"oneDNN|InitializeLog|Warning|Traceback|[Dd]eprecat")
  assert not [line for line in lines if noise.search(line)], resumed.stdout[-3000:]

  results = json.loads((run / "results.json").read_text())
  # The uninterrupted reference: mirrored over two replicas in this process computes the same
  # sums in the same order (measured equal to an uninterrupted two-worker run).
  straight = train.train_and_evaluate(config_lib.Config.from_flags(
      strategy="mirrored", cpu_devices=2, dataset="synthetic", epochs=1, max_steps_per_epoch=120,
      batch_size=64, checkpoint_every=20, steps_per_loop=10, log_every=50,
      workdir=str(tmp_path / "straight")))
  assert results["steps"] == 120
  assert results["weights_sha256"] == straight["weights_sha256"]
  # The chief's log covers the run: the preempted cluster was one process, the rerun another;
  # a clean stop saved where it stopped, so nothing was trained twice.
  events = events_lib.read_events(str(run / events_lib.EVENTS_FILE))
  assert [event["why"] for event in events if event["event"] == "stop"] == [
      "preempted", "finished"]
  assert results["processes"] == results["goodput"]["processes"] == 2
  assert results["goodput"]["lost_steps"] == 0


@pytest.mark.slow
def test_rerunning_a_finished_run_ends_at_once_on_every_worker(finished_runs, monkeypatch,
                                                               capsys):
  # Every worker restores the chief's last step and returns the run's results before any
  # collective op: a non-chief that went on alone would wait in its first one for the others
  # (here: its first training or evaluation call). The chief's own return and its line are
  # test_resume.py's; leaving the cluster after train_and_evaluate, every cluster run's above.
  config, _ = finished_runs["functional"]
  monkeypatch.setattr(distribution, "is_chief", lambda strategy: False)
  for name in ("train_loop", "evaluate"):
    monkeypatch.setattr(task_lib.Task, name, lambda *args, name=name, **kwargs: pytest.fail(
        f"the non-chief went on to {name}"))
  assert train.train_and_evaluate(config) == run_record.read_results(config.output.workdir)
  assert "already finished" not in capsys.readouterr().out  # The chief says it, once.


@pytest.mark.slow
def test_launcher_fails_when_a_worker_fails(tmp_path):
  # A flag value refused before TensorFlow loads: the workers fail in a fraction of a second.
  result = subprocess.run(
      [sys.executable, LAUNCHER, "--workers=2", "--", "--dataset=synthetic",
       "--image_shape=28,28,x", f"--workdir={tmp_path / 'run'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert "must be a comma-separated list of integers" in result.stdout
  assert re.search(r"^\[launcher\] worker \d exited with code 2", result.stdout, re.MULTILINE)


# ---------------------------------------------------------------- Failure bounds.
@pytest.mark.slow
def test_killing_a_worker_stops_the_other_within_the_bound(tmp_path):
  hosts = local_hosts(2)
  flags = ["--strategy=multi_worker_mirrored", "--dataset=synthetic", "--epochs=100",
           "--worker_timeout=15"]
  workers = [start_worker(hosts, i, *flags, f"--workdir={tmp_path / str(i)}") for i in range(2)]
  log = tmp_path / "0" / events_lib.EVENTS_FILE
  # The chief logs the cluster's first step: it trains.
  _wait_for(lambda: log.exists() and '"first_step"' in log.read_text(), workers, "first step")
  workers[1].kill()
  killed_at = time.monotonic()
  output = _finished(workers, timeout=90)[0]
  assert workers[0].returncode != 0
  assert time.monotonic() - killed_at < 15 + 10
  assert "error: worker 0 of 2" in output
  # Only the chief keeps the event log; its process ended in an error when the worker died.
  assert not os.path.exists(tmp_path / "1" / events_lib.EVENTS_FILE)
  events = events_lib.read_events(str(tmp_path / "0" / events_lib.EVENTS_FILE))
  assert events[-1]["event"] == "stop" and events[-1]["why"] == "error"


@pytest.mark.slow
def test_a_peer_that_never_starts_ends_the_wait_within_the_bound(tmp_path):
  hosts = local_hosts(2)
  started = time.monotonic()
  lonely = start_worker(hosts, 0, "--strategy=multi_worker_mirrored", "--dataset=synthetic",
                        "--worker_timeout=5", f"--workdir={tmp_path}")
  # While it waits, its gRPC server listens: on every interface, though its address is
  # 127.0.0.1. TensorFlow has no setting to bind it to one (README: Security); if a release
  # gains one, this fails and the README's claim must change.
  port = int(hosts[0].rpartition(":")[2])
  deadline = time.monotonic() + 30
  while not listening_addresses(port) and time.monotonic() < deadline:
    time.sleep(0.2)
  assert listening_addresses(port) == {"0.0.0.0"} or listening_addresses(port) == {"::"}
  output = _finished([lonely], timeout=90)[0]
  assert lonely.returncode != 0
  assert time.monotonic() - started < 5 + 30  # The bound, plus start-up.
  assert "made no progress for 5 s: a peer worker did not start" in output


@pytest.mark.slow
def test_a_one_worker_cluster_trains_one_step_a_call(tmp_path):
  # One replica, XLA on by default: it must still run one step per call (the plan's rule,
  # checked below in milliseconds), and a real one-worker cluster trains so. Its 10 steps
  # would take packs of 10 on the default strategy.
  worker = start_worker(local_hosts(1), 0, "--strategy=multi_worker_mirrored",
                        "--dataset=synthetic", "--epochs=1", "--max_steps_per_epoch=10",
                        f"--workdir={tmp_path}")
  output = _finished([worker], timeout=120)[0]
  assert worker.returncode == 0, output[-3000:]
  results = json.loads((tmp_path / "results.json").read_text())
  assert (results["num_replicas"], results["steps"], results["jit_compile"],
          results["steps_per_xla_call"]) == (1, 10, True, 1)


def test_a_one_worker_cluster_plans_one_step_a_compiled_call():
  # The mirrored strategies sync the optimizer in a way an in-graph loop of steps cannot hold,
  # so one replica under XLA packs steps on the default strategy only.
  facts = device_plan.DeviceFacts(host_memory_bytes=2**34)
  for strategy, pack in (("multi_worker_mirrored", 1), ("default", schedule.MAX_PACK)):
    plan = device_plan.plan_run(
        config_lib.Config.from_flags(strategy=strategy, dataset="synthetic"), facts)
    assert (plan.num_replicas, plan.xla, plan.pack_steps) == (1, True, pack), strategy


# ---------------------------------------------------------------- The cluster's description.
@pytest.mark.parametrize("tf_config, message", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('["worker"]', "must be a JSON object"),
    ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "TF_CONFIG has no workers"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "TF_CONFIG has no 'task'"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
     "task index 1 is out of range: the cluster has 1 'worker' tasks, so it must be 0 to 0"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}',
     "task type 'ps' is not in the cluster"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     "must be a list of host:port strings"),
    ("", "needs the cluster: set TF_CONFIG, or give --worker_hosts"),
])
def test_malformed_tf_config_is_refused_clearly(tf_config, message):
  with pytest.raises(errors.UserError, match=re.escape(message)):
    cluster.parse_tf_config(tf_config)


def test_malformed_tf_config_stops_the_trainer_before_training(monkeypatch, capsys, tmp_path):
  # The trainer's own path (trainer.main's, inside errors.shown_as_one_line; test_main.py runs
  # it in a process): refused in one line, exit 2, before the workdir exists.
  monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}')
  with pytest.raises(SystemExit) as exited:
    with errors.shown_as_one_line():
      train.train_and_evaluate(config_lib.Config.from_flags(
          strategy="multi_worker_mirrored", dataset="synthetic", workdir=str(tmp_path / "run")))
  assert exited.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("error: TF_CONFIG is not valid JSON") and len(err.splitlines()) == 1
  assert not (tmp_path / "run").exists()


def test_a_public_worker_address_is_named_and_private_ones_are_not():
  tf_config = cluster.parse_tf_config(json.dumps({
      "cluster": {"worker": ["127.0.0.1:2222", "10.1.2.3:2222", "192.168.0.7:2222",
                             "localhost:2222", "8.8.8.8:2222", "[2001:4860::8888]:2222"]},
      "task": {"type": "worker", "index": 0}}))
  assert cluster.exposed_addresses(tf_config) == ["8.8.8.8:2222", "[2001:4860::8888]:2222"]


def test_worker_hosts_flag_builds_the_same_cluster_as_tf_config():
  tf_config = cluster.tf_config_from_environment(["127.0.0.1:1", "127.0.0.1:2"], 1)
  assert tf_config == {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                       "task": {"type": "worker", "index": 1}}
  assert cluster.describe_task(tf_config) == "worker 1 of 2 (127.0.0.1:2)"


def test_slurm_helper_turns_slurms_variables_into_tf_config(monkeypatch, capsys):
  # The script as its command line runs it, in this process: it only reads the environment.
  for name, value in (("SLURM_PROCID", "1"), ("SLURM_STEP_NUM_TASKS", "2"),
                      ("SLURM_STEP_NODELIST", "node[07-08]"),
                      ("SLURM_STEP_TASKS_PER_NODE", "1(x2)")):
    monkeypatch.setenv(name, value)
  monkeypatch.setattr(sys, "argv", ["slurm_tf_config.py", "--port=2300"])
  runpy.run_path(os.path.join(ROOT, "scripts", "slurm_tf_config.py"), run_name="__main__")
  tf_config = cluster.parse_tf_config(capsys.readouterr().out.strip().splitlines()[-1])
  assert tf_config == {"cluster": {"worker": ["node07:2300", "node08:2300"]},
                       "task": {"type": "worker", "index": 1}}
