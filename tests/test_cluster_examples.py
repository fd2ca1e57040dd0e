"""examples/slurm and examples/kubernetes: the TF_CONFIG each gives every worker is one cluster of
the right size, each task in it once, and each starts the multi-worker trainer with real flags;
their tf.data services start a dispatcher and workers that find it, with real flags."""

import json
import os
import re
import shlex
import sys

import yaml

from tests.processes import ROOT
from trainer import config as config_lib
from trainer import data_service
from trainer.distribute import cluster

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import slurm_tf_config  # pylint: disable=g-import-not-at-top,wrong-import-position

EXAMPLES = os.path.join(ROOT, "examples")


def _check_cluster(tf_configs, num_workers: int) -> None:
  """Every worker's TF_CONFIG names the same cluster of `num_workers`, and itself once."""
  parsed = [cluster.parse_tf_config(text) for text in tf_configs]
  clusters = {tuple(tf_config["cluster"]["worker"]) for tf_config in parsed}
  assert len(clusters) == 1 and len(next(iter(clusters))) == num_workers
  assert sorted(tf_config["task"]["index"] for tf_config in parsed) == list(range(num_workers))


def _check_trainer_command(words) -> None:
  """A multi-worker trainer command whose every flag is one of trainer.main's."""
  assert words[:3] == ["python", "-m", "trainer.main"]
  assert "--strategy=multi_worker_mirrored" in words
  for word in words[3:]:
    assert word.startswith("--") and word[2:].split("=")[0] in config_lib.SETTINGS, word


def test_the_slurm_script_gives_each_task_its_place_in_one_cluster(monkeypatch):
  script = open(os.path.join(EXAMPLES, "slurm", "train.sbatch")).read()
  nodes = int(re.search(r"#SBATCH --nodes=(\d+)", script).group(1))
  tasks_per_node = int(re.search(r"#SBATCH --ntasks-per-node=(\d+)", script).group(1))
  inner = shlex.split(re.search(r"srun bash -c '(.*)'", script).group(1))
  port = int(re.search(r"--port=(\d+)", " ".join(inner)).group(1))
  num_tasks = nodes * tasks_per_node
  tf_configs = []
  for task in range(num_tasks):  # The variables Slurm sets in each task of the srun step.
    monkeypatch.setenv("SLURM_PROCID", str(task))
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", str(num_tasks))
    monkeypatch.setenv("SLURM_STEP_NODELIST", f"gpu[01-{nodes:02d}]")
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", f"{tasks_per_node}(x{nodes})")
    tf_configs.append(json.dumps(slurm_tf_config.slurm_tf_config(port)))
  _check_cluster(tf_configs, num_tasks)
  assert cluster.parse_tf_config(tf_configs[0])["cluster"]["worker"][0] == f"gpu01:{port}"
  _check_trainer_command(inner[inner.index("exec") + 1:])


def test_the_tfjob_gives_each_pod_its_place_in_one_cluster():
  with open(os.path.join(EXAMPLES, "kubernetes", "tfjob.yaml")) as f:
    job = yaml.safe_load(f)
  name, namespace = job["metadata"]["name"], job["metadata"].get("namespace", "default")
  worker = job["spec"]["tfReplicaSpecs"]["Worker"]
  container = worker["template"]["spec"]["containers"][0]
  port = next((p["containerPort"] for p in container.get("ports", ())
               if p["name"] == "tfjob-port"), 2222)
  replicas = worker["replicas"]
  # What the training operator sets in pod i: every worker by its service name, and the pod's own
  # place among them.
  addresses = [f"{name}-worker-{i}.{namespace}.svc:{port}" for i in range(replicas)]
  tf_configs = [json.dumps({"cluster": {"worker": addresses},
                            "task": {"type": "worker", "index": i}})
                for i in range(replicas)]
  _check_cluster(tf_configs, replicas)
  _check_trainer_command(container["command"])
  assert any(mount["mountPath"] in " ".join(container["command"])
             for mount in container["volumeMounts"])  # The workdir is on the shared volume.


def _check_data_service(dispatcher, workers, dispatcher_address: str) -> str:
  """A dispatcher with a journal, and workers of the dispatcher at `dispatcher_address` that
  check the shared training data, each flag one of trainer.data_service's; returns the data's
  path."""
  for words in (dispatcher, workers):
    assert words[:3] == ["python", "-m", "trainer.data_service"]
    for word in words[3:]:
      name = word[2:].split("=")[0]
      assert word.startswith("--") and name in data_service.FLAGS, word
  port = re.search(r"--port=(\d+)", " ".join(dispatcher)).group(1)
  assert "--dispatcher" in dispatcher and any(w.startswith("--work_dir=") for w in dispatcher)
  assert "--worker" in workers and f"--dispatcher={dispatcher_address}" in workers
  assert dispatcher_address.endswith(f":{port}")
  shared = [word.partition("=")[2] for word in workers if word.startswith("--shared_data_dir=")]
  assert len(shared) == 1 and shared[0]
  return shared[0]


def test_the_slurm_data_service_starts_a_dispatcher_and_workers_that_find_it():
  script = open(os.path.join(EXAMPLES, "slurm", "data_service.sbatch")).read()
  steps = [shlex.split(line) for line in script.splitlines() if line.startswith("srun ")]
  dispatcher = steps[0][steps[0].index("python"):-1]  # The step runs in the background: &.
  workers = shlex.split(steps[1][steps[1].index("-c") + 1])
  workers = workers[workers.index("exec") + 1:]
  written = re.search(r'echo "(\S+)" > (\S+)', script)
  assert _check_data_service(dispatcher, workers, written.group(1)) == "$DATA_DIR"
  assert re.search(r"^DATA_DIR=\S+", script, re.MULTILINE)
  assert "--nodelist=$DISPATCHER_NODE" in steps[0] and "--ntasks-per-node=1" in steps[1]
  # The trainer's script says how to read the address the service script writes.
  train = open(os.path.join(EXAMPLES, "slurm", "train.sbatch")).read()
  assert f"--data_service=$(cat {written.group(2)})" in train


def test_the_kubernetes_data_service_serves_the_address_the_tfjob_names():
  with open(os.path.join(EXAMPLES, "kubernetes", "data_service.yaml")) as f:
    service, dispatcher, workers = yaml.safe_load_all(f)
  assert service["kind"] == "Service" and dispatcher["kind"] == workers["kind"] == "Deployment"
  name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
  port = service["spec"]["ports"][0]["port"]
  assert service["spec"]["selector"] == dispatcher["spec"]["template"]["metadata"]["labels"]
  address = f"{name}.{namespace}.svc:{port}"
  worker = workers["spec"]["template"]["spec"]
  shared = _check_data_service(dispatcher["spec"]["template"]["spec"]["containers"][0]["command"],
                               worker["containers"][0]["command"], address)
  # The workers read the shared data from a volume mounted where --shared_data_dir points.
  mounts = {mount["name"]: mount["mountPath"] for mount in worker["containers"][0]["volumeMounts"]}
  assert any(shared.startswith(path.rstrip("/") + "/") for path in mounts.values())
  assert set(mounts) <= {volume["name"] for volume in worker["volumes"]}
  with open(os.path.join(EXAMPLES, "kubernetes", "tfjob.yaml")) as f:
    assert f'"--data_service={address}"' in f.read()
