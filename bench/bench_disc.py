"""Memory (and time) of DAC's discriminator in Flax for 2 s clips at batch 8.

The discriminator step's program (D loss and its gradient wrt the discriminator's
parameters on fake and real audio) is compiled at DAC's full size (width 1.0)
for 44.1 and 16 kHz; XLA's memory analysis gives the buffers it needs (arguments,
outputs, temporaries), and one run gives its time and the process's peak RSS.
Run: ``python -m bench.bench_disc [--batch 8 --seconds 2 --no_run]``.
"""

import argparse
import time

import jax
import jax.numpy as jnp

from bench.common import block, peak_rss_mb, report
from neurocodec_jax import losses
from neurocodec_jax.models.discriminators import Discriminator


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seconds", type=float, default=2.0)
  p.add_argument("--no_run", dest="run", action="store_false")
  args = p.parse_args(argv)
  rows = []
  for sr in (44100, 16000):
    disc = Discriminator(sample_rate=sr)
    n = int(args.seconds * sr)
    fake = jax.random.normal(jax.random.PRNGKey(0), (args.batch, 1, n)) * 0.1
    real = jax.random.normal(jax.random.PRNGKey(1), (args.batch, 1, n)) * 0.1
    params = jax.jit(disc.init)(jax.random.PRNGKey(2), fake[:1])["params"]
    d_step = jax.jit(jax.value_and_grad(lambda p, f, r: losses.discriminator_loss(
        disc.apply({"params": p}, f), disc.apply({"params": p}, r))))
    start = time.perf_counter()
    compiled = d_step.lower(params, fake, real).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    row = dict(sample_rate=sr, batch=args.batch, seconds=args.seconds, compile_s=compile_s,
               xla_temp_gb=mem.temp_size_in_bytes / 2 ** 30,
               xla_total_gb=(mem.temp_size_in_bytes + mem.argument_size_in_bytes
                             + mem.output_size_in_bytes) / 2 ** 30)
    if args.run:
      start = time.perf_counter()
      block(compiled(params, fake, real))
      row["run_s"] = time.perf_counter() - start
      row["peak_rss_gb"] = peak_rss_mb() / 1024
    rows.append(row)
    print(row, flush=True)
  report("disc", ["sample_rate", "batch", "seconds", "compile_s", "xla_temp_gb",
                  "xla_total_gb", "run_s", "peak_rss_gb"], rows,
         notes="DAC's discriminator at full size (MPD 2,3,5,7,11 + MRD 2048,1024,512), "
               "D loss + parameter gradients on fake and real, fp32, CPU")
  return rows


if __name__ == "__main__":
  main()
