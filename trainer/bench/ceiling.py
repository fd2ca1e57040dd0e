"""This machine's matmul ceiling: the best rate of a large matmul, with and without XLA.

The benchmark sets its peers against it, and a run's MFU on a CPU takes it as the peak
(trainer.records.mfu keeps it once per machine): CPUs have no datasheet peak that a framework
reaches, so the ceiling is a rate measured here.
"""

from trainer.bench import timing


def matmul_ceiling(tiny: bool, dtype: str = "float32", quick: bool = False) -> dict:
  """The best matmul rate (FLOP/s) in `dtype` of this machine over a few shapes, with and
  without XLA.

  Shapes: two large squares (what vendors' peaks assume) and the blog model's first layer at
  batch 4096, so the ceiling is a rate this machine reaches, not a spec sheet's; `quick` times
  the 2048 square alone.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  shapes = ([(256, 256, 256)] if tiny else [(2048, 2048, 2048)] if quick else
            [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 784, 256)])
  rates = {}
  for m, k, n in shapes:
    # Seeded: a --deterministic run measures its ceiling under op determinism, which refuses
    # random ops without a seed.
    a = tf.cast(tf.random.stateless_uniform([m, k], seed=[0, 1]), dtype)
    b = tf.cast(tf.random.stateless_uniform([k, n], seed=[0, 2]), dtype)
    for jit in (False, True):
      matmul = tf.function(tf.linalg.matmul, jit_compile=jit)

      @tf.function
      def repeat(count, matmul=matmul, a=a, b=b):
        total = tf.constant(0.0)
        for _ in tf.range(count):
          # Reads the product, so nothing is skipped.
          total += tf.cast(matmul(a, b)[0, 0], tf.float32)
        return total

      seconds = timing.seconds_per_iteration(
          lambda count, repeat=repeat: repeat(tf.constant(count)).numpy(),
          min_call_seconds=0.001 if tiny else timing.MIN_CALL_SECONDS)
      rates[f"{m}x{k}x{n}" + (" XLA" if jit else "")] = 2 * m * k * n / seconds
  best_shape = max(rates, key=rates.get)
  return {"flops_per_sec": rates[best_shape], "best": best_shape, "by_shape": rates}
