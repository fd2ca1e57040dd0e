"""Prints the TF_CONFIG of the current Slurm task, for trainer.main on a Slurm allocation.

Inside an sbatch script, one task per node:
  srun bash -c 'TF_CONFIG=$(python scripts/slurm_tf_config.py) \
      python -m trainer.main --strategy=multi_worker_mirrored --workdir=runs/slurm'

It reads Slurm's variables (SLURM_PROCID, SLURM_STEP_NODELIST, ...) through TensorFlow's
SlurmClusterResolver; every task gets port --port on its node.
"""

import argparse
import json

from tensorflow.python.distribute.cluster_resolver import slurm_cluster_resolver  # pylint: disable=g-direct-tensorflow-import


def slurm_tf_config(port: int) -> dict:
  """Returns TF_CONFIG for this Slurm task: every task of the step is a worker."""
  # The GPU count only feeds CUDA_VISIBLE_DEVICES, which auto_set_gpu=False leaves alone (each
  # worker counts its own GPUs); fixing it spares CPU nodes the nvidia-smi call.
  resolver = slurm_cluster_resolver.SlurmClusterResolver(
      port_base=port, gpus_per_node=1, auto_set_gpu=False)
  return {"cluster": resolver.cluster_spec().as_dict(),
          "task": {"type": resolver.task_type, "index": resolver.task_id}}


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--port", type=int, default=12345, help="port of every worker")
  args = parser.parse_args()
  print(json.dumps(slurm_tf_config(args.port)))
