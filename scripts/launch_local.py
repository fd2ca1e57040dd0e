"""Starts N trainer workers on this machine as one MultiWorkerMirroredStrategy cluster.

  python scripts/launch_local.py --workers=2 -- --api=subclass --dataset=fashion_mnist \
      --data_dir=/usr/share/datasets/fashion-mnist --epochs=1 --workdir=runs/two-workers

Everything after `--` goes to every worker's `python -m trainer.main`, with
--strategy=multi_worker_mirrored added. Each worker gets a free port on 127.0.0.1 and its own
TF_CONFIG; each line of its output is prefixed with [worker I]. If a worker fails, the others are
stopped and the launcher exits with that worker's exit code.

On a GPU host, --gpus_per_worker=K gives worker I the GPUs I*K to I*K+K-1 (of those
CUDA_VISIBLE_DEVICES already allows, if set) through its own CUDA_VISIBLE_DEVICES, so no two
workers share a GPU. Without it each worker's device plan divides the host's GPUs among its
workers the same way (NCCL refuses one GPU in two processes); with fewer GPUs than workers,
TensorFlow's workers share them over RING and JAX's are refused in one line
(`python -m trainer.plan` shows either):

  python scripts/launch_local.py --workers=4 --gpus_per_worker=2 -- --model=resnet50 ...
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A worker blocked in TensorFlow's collectives ignores SIGTERM; SIGKILL follows after this long.
KILL_AFTER_S = 10.0


def free_ports(count: int) -> List[int]:
  """Returns `count` distinct free TCP ports on 127.0.0.1."""
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def visible_devices(index: int, gpus_per_worker: int, visible: Optional[str],
                    num_gpus: int) -> str:
  """Worker `index`'s CUDA_VISIBLE_DEVICES: its `gpus_per_worker` GPUs of those the launcher
  may use (`visible`, the launcher's own CUDA_VISIBLE_DEVICES, or None for all `num_gpus`)."""
  allowed = ([device.strip() for device in visible.split(",") if device.strip()]
             if visible is not None else [str(gpu) for gpu in range(num_gpus)])
  mine = allowed[index * gpus_per_worker:(index + 1) * gpus_per_worker]
  if len(mine) < gpus_per_worker:
    raise ValueError(f"worker {index} needs GPUs {index * gpus_per_worker} to "
                     f"{(index + 1) * gpus_per_worker - 1}, but only {len(allowed)} are "
                     "available: lower --workers or --gpus_per_worker")
  return ",".join(mine)


def count_gpus() -> int:
  """The host's GPUs as nvidia-smi lists them (0 without it), without starting TensorFlow."""
  try:
    listing = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return 0
  return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


def worker_environment(hosts: List[str], index: int, gpus: Optional[str] = None) -> dict:
  """Worker `index`'s environment: its TF_CONFIG, and its CUDA_VISIBLE_DEVICES if `gpus`."""
  env = dict(os.environ)
  if gpus is not None:
    env["CUDA_VISIBLE_DEVICES"] = gpus
  env["TF_CONFIG"] = json.dumps({"cluster": {"worker": hosts},
                                 "task": {"type": "worker", "index": index}})
  env["PYTHONUNBUFFERED"] = "1"
  return env


def _relay(stream, prefix: str) -> None:
  for line in iter(stream.readline, ""):
    sys.stdout.write(f"{prefix} {line}")
    sys.stdout.flush()


def stop_all(processes: List[subprocess.Popen]) -> None:
  """SIGTERM, then SIGKILL for any worker still alive after KILL_AFTER_S."""
  for process in processes:
    if process.poll() is None:
      process.send_signal(signal.SIGTERM)
  deadline = time.monotonic() + KILL_AFTER_S
  for process in processes:
    try:
      process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


def launch(num_workers: int, trainer_flags: List[str], gpus_per_worker: int = 0) -> int:
  """Runs the cluster to the end; returns 0, or the exit code of the first worker that failed.
  With `gpus_per_worker`, each worker sees only its own GPUs."""
  hosts = [f"127.0.0.1:{port}" for port in free_ports(num_workers)]
  gpus = [None] * num_workers
  if gpus_per_worker:
    visible, count = os.environ.get("CUDA_VISIBLE_DEVICES"), count_gpus()
    gpus = [visible_devices(index, gpus_per_worker, visible, count)
            for index in range(num_workers)]
  processes, relays = [], []
  for index in range(num_workers):
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer.main", "--strategy=multi_worker_mirrored",
         *trainer_flags], cwd=ROOT, env=worker_environment(hosts, index, gpus[index]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    relay = threading.Thread(target=_relay, args=(process.stdout, f"[worker {index}]"))
    relay.start()
    processes.append(process)
    relays.append(relay)

  exit_code = 0
  try:
    while True:
      codes = [p.poll() for p in processes]
      failed = [index for index, code in enumerate(codes) if code not in (None, 0)]
      if failed:
        exit_code = codes[failed[0]]
        print(f"[launcher] worker {failed[0]} exited with code {exit_code}; stopping the others.",
              flush=True)
        break
      if all(code == 0 for code in codes):
        break
      time.sleep(0.2)
  except KeyboardInterrupt:
    exit_code = 130
  finally:
    stop_all(processes)
    for relay in relays:
      relay.join()
  return exit_code


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   usage="%(prog)s --workers=N [--gpus_per_worker=K] -- <trainer flags>")
  parser.add_argument("--workers", type=int, default=2, help="number of workers to start")
  parser.add_argument("--gpus_per_worker", type=int, default=0,
                      help="give each worker this many GPUs of its own (CUDA_VISIBLE_DEVICES); "
                      "0: each worker's device plan divides the host's GPUs among the workers")
  parser.add_argument("trainer_flags", nargs=argparse.REMAINDER,
                      help="flags for trainer.main, after --")
  args = parser.parse_args()
  if args.workers < 1:
    parser.error("--workers must be at least 1")
  if args.gpus_per_worker < 0:
    parser.error("--gpus_per_worker must be 0 (every worker sees every GPU) or more")
  trainer_flags = args.trainer_flags[1:] if args.trainer_flags[:1] == ["--"] else args.trainer_flags
  if any(flag.startswith("--strategy") for flag in trainer_flags):
    parser.error("the launcher sets --strategy=multi_worker_mirrored itself; leave it out")
  try:
    return launch(args.workers, trainer_flags, args.gpus_per_worker)
  except ValueError as e:
    parser.error(str(e))


if __name__ == "__main__":
  sys.exit(main())
