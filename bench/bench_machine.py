"""This machine's peak numbers: matmul GFLOP/s and memory bandwidth, in JAX (XLA CPU).

They are the denominators for the "fraction of peak" of the other benchmarks.
Run: ``python -m bench.bench_machine``.
"""

import jax
import jax.numpy as jnp

from bench.common import block, median_seconds, report


def matmul_gflops(n: int = 2048) -> float:
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  f = jax.jit(jnp.matmul)
  t = median_seconds(lambda: block(f(a, b)), repeats=5)
  return 2 * n ** 3 / t / 1e9


def bandwidth_gbs(mb: int = 512) -> float:
  """Read+write bandwidth of a streaming elementwise op (x * 2 + 1) on ``mb`` MB."""
  x = jnp.ones((mb * 2 ** 20 // 4,), jnp.float32)
  f = jax.jit(lambda x: x * 2 + 1)
  t = median_seconds(lambda: block(f(x)), repeats=5)
  return 2 * x.nbytes / t / 1e9


def main():
  rows = [dict(measure="matmul fp32 2048^3", value=matmul_gflops(), unit="GFLOP/s"),
          dict(measure="stream x*2+1 (512 MB)", value=bandwidth_gbs(), unit="GB/s")]
  report("machine", ["measure", "value", "unit"], rows)
  return rows


if __name__ == "__main__":
  main()
