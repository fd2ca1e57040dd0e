"""Entry point: `python -m trainer.benchmark`; the benchmark itself is trainer/bench/benchmark.py."""

from trainer import command
from trainer.bench import benchmark

if __name__ == "__main__":
  benchmark.define_flags()
  command.run(benchmark.main)
