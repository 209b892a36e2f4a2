"""Our Mamba mixer vs mamba-ssm's ``Mamba`` (same weights, same process).

Forward+backward (gradients wrt the input and every parameter) at the cocktail
preset's sizes: d_model = hidden_dim 256 (d_inner 512), d_state 16, d_conv 4,
expand 2, batch 8, length 172 (2 s of 44.1 kHz DAC frames). The torch module runs
its slow path with the pure PyTorch ``selective_scan_ref`` on CPU (on a GPU with
the real extension, its CUDA fast path). Run: ``python -m bench.bench_mamba``.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import torch

from bench.common import block, median_seconds, report
from codec_bridge.converters import mamba_params_from_torch as params_from_torch
from neurocodec_jax.models.mamba import Mamba
from neurocodec_jax.ops import BACKENDS
from tests.references import import_mamba_ssm


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--length", type=int, default=172)
  p.add_argument("--d_model", type=int, default=256)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args(argv)
  _, TorchMamba = import_mamba_ssm()
  torch.manual_seed(0)
  ref = TorchMamba(d_model=args.d_model, d_state=16, d_conv=4, expand=2,
                   use_fast_path=torch.cuda.is_available())
  x = np.random.default_rng(0).standard_normal(
      (args.batch, args.length, args.d_model)).astype(np.float32)
  xt = torch.from_numpy(x).requires_grad_()

  def ref_fwd_bwd():
    ref.zero_grad()
    ref(xt).square().sum().backward()

  t_ref = median_seconds(ref_fwd_bwd, args.repeats)
  rows = [dict(impl="mamba_ssm Mamba (torch, slow path)", fwd_bwd_ms=1e3 * t_ref, speedup=1.0)]
  params = params_from_torch(ref)
  xj = jnp.asarray(x)
  for backend in BACKENDS:
    ours = Mamba(args.d_model, scan_backend=backend)
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(ours.apply({"params": p}, x) ** 2),
                            argnums=(0, 1)))
    t = median_seconds(lambda: block(grad(params, xj)), args.repeats, warmup=2)
    rows.append(dict(impl=f"ours ({backend})", fwd_bwd_ms=1e3 * t, speedup=t_ref / t))
  report("mamba", ["impl", "fwd_bwd_ms", "speedup"], rows,
         notes=f"batch {args.batch}, length {args.length}, d_model {args.d_model} "
               f"(d_inner {2 * args.d_model}), d_state 16, fp32, grads wrt input and "
               f"every parameter; torch threads {torch.get_num_threads()}")
  return rows


if __name__ == "__main__":
  main()
