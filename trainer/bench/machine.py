"""The machine a benchmark ran on, as its records state it: the CPU, its vector extensions, and
whether TensorFlow's oneDNN kernels are on. Both benchmarks (benchmark, input_benchmark) write it.
"""

import os


def machine() -> dict:
  """The CPU, its vector extensions, and whether TensorFlow's oneDNN kernels are on."""
  from trainer.distribute import hardware  # pylint: disable=g-import-not-at-top
  extensions = sorted(hardware.cpu_flags() & {
      "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
      "amx_bf16", "amx_int8"})
  # TensorFlow turns oneDNN on by default on x86 Linux; TF_ENABLE_ONEDNN_OPTS=0 turns it off.
  onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1 (default)")
  return {"cpu": hardware.cpu_model(), "cores": os.cpu_count(), "extensions": extensions,
          "tf_enable_onednn_opts": onednn}
