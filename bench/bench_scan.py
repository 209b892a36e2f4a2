"""selective_scan (each backend) vs mamba-ssm's selective_scan_ref, same process.

Forward and forward+backward at (batch 8, dim 512, state 16) for the lengths on the
command line, all inputs requiring gradients (u, delta, A, B, C, D, z, delta_bias),
delta_softplus on. Memory, measured the same way for both: the bytes an
implementation keeps from the forward for its backward (torch: the tensors autograd
saves, via ``saved_tensors_hooks``; ours: the residuals held by ``jax.vjp``), and
for ours XLA's temporary buffers of the compiled forward+backward. Bandwidth: the
unavoidable bytes (read every input once, write the output and every gradient once)
over the forward+backward time, as a fraction of this machine's streaming bandwidth.

Run: ``python -m bench.bench_scan [--lengths 172 1024 4096]``.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import torch

from bench.bench_machine import bandwidth_gbs
from bench.common import block, median_seconds, report
from neurocodec_jax.ops import BACKENDS, selective_scan
from tests.references import import_mamba_ssm

ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def inputs(batch, dim, state, length, seed=0):
  rng = np.random.default_rng(seed)
  r = lambda *s: rng.standard_normal(s).astype(np.float32)
  return dict(u=r(batch, dim, length), delta=r(batch, dim, length), A=-np.exp(r(dim, state)),
              B=r(batch, state, length), C=r(batch, state, length), D=r(dim),
              z=r(batch, dim, length), delta_bias=r(dim))


def torch_saved_mb(fn) -> float:
  """MB of tensors autograd saves for the backward while ``fn()`` runs forward."""
  seen = {}
  def pack(t):
    storage = t.untyped_storage()        # views of one storage count once
    seen[storage.data_ptr()] = storage.nbytes()
    return t
  with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
    fn()
  return sum(seen.values()) / 2 ** 20


def jax_saved_mb(f, args) -> float:
  """MB of residuals ``jax.vjp`` keeps for the backward (distinct buffers)."""
  _, vjp_fn = jax.vjp(f, *args)
  leaves = [x for x in jax.tree.leaves(vjp_fn) if hasattr(x, "nbytes")]
  inputs_ids = {id(a) for a in args}
  return sum(x.nbytes for x in leaves if id(x) not in inputs_ids) / 2 ** 20


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--lengths", type=int, nargs="+", default=[172, 1024, 4096])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--dim", type=int, default=512)
  p.add_argument("--state", type=int, default=16)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--backends", nargs="+", default=list(BACKENDS))
  args = p.parse_args(argv)
  ref, _ = import_mamba_ssm()
  stream_gbs = bandwidth_gbs()
  rows = []
  for length in args.lengths:
    repeats = args.repeats if length <= 1024 else 1
    x = inputs(args.batch, args.dim, args.state, length)
    t = {k: torch.from_numpy(v).requires_grad_() for k, v in x.items()}
    call = lambda: ref(*(t[k] for k in ARGS[:-1]), delta_bias=t["delta_bias"], delta_softplus=True)
    def ref_fwd():
      with torch.no_grad():
        call()
    def ref_fwdbwd():
      call().sum().backward()
    ref_times = (median_seconds(ref_fwd, repeats), median_seconds(ref_fwdbwd, repeats))
    # Unavoidable traffic of forward+backward: inputs read, output and grads written.
    io_bytes = 2 * sum(v.nbytes for v in x.values()) + x["u"].nbytes
    rows.append(dict(length=length, impl="selective_scan_ref (torch)",
                     fwd_ms=1e3 * ref_times[0], fwd_bwd_ms=1e3 * ref_times[1],
                     speedup_fwd=1.0, speedup_fwd_bwd=1.0,
                     saved_mb=torch_saved_mb(call),
                     pct_bandwidth=100 * io_bytes / ref_times[1] / 1e9 / stream_gbs))
    print(rows[-1], flush=True)
    xj = [jnp.asarray(x[k]) for k in ARGS]
    for backend in args.backends:
      f = lambda *a, b=backend: selective_scan(*a[:7], delta_bias=a[7], delta_softplus=True,
                                              backend=b)
      fwd = jax.jit(f)
      grad = jax.jit(jax.grad(lambda *a: jnp.sum(f(*a)), argnums=tuple(range(len(ARGS)))))
      tf = median_seconds(lambda: block(fwd(*xj)), repeats, warmup=2)
      tb = median_seconds(lambda: block(grad(*xj)), repeats, warmup=2)
      mem = grad.lower(*xj).compile().memory_analysis()
      rows.append(dict(length=length, impl=f"ours ({backend})", fwd_ms=1e3 * tf,
                       fwd_bwd_ms=1e3 * tb, speedup_fwd=ref_times[0] / tf,
                       speedup_fwd_bwd=ref_times[1] / tb, saved_mb=jax_saved_mb(f, xj),
                       xla_temp_mb=mem.temp_size_in_bytes / 2 ** 20 if mem else None,
                       pct_bandwidth=100 * io_bytes / tb / 1e9 / stream_gbs))
      print(rows[-1], flush=True)
  report("scan", ["length", "impl", "fwd_ms", "fwd_bwd_ms", "speedup_fwd", "speedup_fwd_bwd",
                  "saved_mb", "xla_temp_mb", "pct_bandwidth"],
         rows, notes=f"batch {args.batch}, dim {args.dim}, state {args.state}, fp32, "
                     f"torch threads {torch.get_num_threads()}, streaming bandwidth "
                     f"{stream_gbs:.1f} GB/s")
  return rows


if __name__ == "__main__":
  main()
