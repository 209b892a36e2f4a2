"""Input pipeline throughput: training examples per second the grain loader delivers.

Compared with the train step's consumption in bench_step (examples/s = batch / step
time): the loader must be faster, or the step waits for data.
Run: ``python -m bench.bench_pipeline [--root DIR]`` (default: the demo dataset).
"""

import argparse
import sys
import time

from absl import flags

from bench.common import report
from neurocodec_jax.configs import neurocodec
from neurocodec_jax.data import open_split, train_dataset


def examples_per_second(source, batch_size: int, num_workers: int, batches: int = 30) -> float:
  it = iter(train_dataset(source, batch_size, seed=0, num_workers=num_workers))
  next(it)                                 # start-up (workers, first reads)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch_size / (time.perf_counter() - start)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--root", default=None)
  args = p.parse_args(argv)
  if not flags.FLAGS.is_parsed():
    flags.FLAGS([sys.argv[0]])       # grain's workers read absl flags: their defaults
  config = neurocodec.get_config("demo")
  if args.root:
    config.root = args.root
  rows = []
  for fields in (("noisy", "clean", "eeg"), ("clean", "eeg")):
    source = open_split(config, "train", fields=fields)
    for workers in (0, 2):
      rows.append(dict(fields="+".join(fields), workers=workers,
                       batch=config.batch_size,
                       examples_per_s=examples_per_second(source, config.batch_size,
                                                          workers)))
  report("pipeline", ["fields", "workers", "batch", "examples_per_s"], rows,
         notes=f"dataset {config.root}")
  return rows


if __name__ == "__main__":
  main()
