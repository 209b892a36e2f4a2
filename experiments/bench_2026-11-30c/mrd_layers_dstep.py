"""Each MRD conv layer of DAC's size as the discriminator step runs it (forward +
weight gradient; + input gradient except the first layer, whose input is the detached
spectrogram), ours (the WNConv the MRD uses today) vs torch's WNConv2d, batch 8, the
shapes DAC's MRD feeds each layer for 2 s at 16 kHz; median of 5 after two warm-ups,
one process.

  python experiments/bench_2026-11-30c/mrd_layers_dstep.py [--fft 2048]
"""
import os
import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from dac.model.discriminator import WNConv2d

sys.path.insert(0, ".")
from neurocodec_jax.models import discriminators as ours  # pylint: disable=g-import-not-at-top
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import med_ms  # pylint: disable=g-import-not-at-top

torch.set_num_threads(2)
p = argparse.ArgumentParser()
p.add_argument("--fft", type=int, default=2048)
p.add_argument("--bands", type=int, nargs="*", default=[0, 4])
args = p.parse_args()


spec = ours.mrd_spectrogram(jnp.zeros((8, 1, 32000)), args.fft)
frames, n_bins = spec.shape[2], spec.shape[3]
edges = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in ours.BANDS]
rng = np.random.default_rng(0)
print(f"fft {args.fft}: layer  input  torch_ms  ours_ms  (ours: weights / +input grad)")
for b in args.bands:
  width = edges[b][1] - edges[b][0]
  cin = 2
  for i, (k, s, pd) in enumerate(ours.MRD_LAYERS):
    x = rng.standard_normal((8, cin, frames, width)).astype(np.float32)
    tconv = WNConv2d(cin, 32, kernel_size=k, stride=s, padding=pd)
    mod = ours.WNConv(32, k, s, pd, polyphase=None, banded=None)
    params = mod.init(jax.random.PRNGKey(0), jnp.asarray(x))["params"]
    yshape = mod.apply({"params": params}, jnp.asarray(x)).shape
    ct = rng.standard_normal(yshape).astype(np.float32)
    xt, ctt = torch.tensor(x, requires_grad=i > 0), torch.tensor(ct)

    def run_torch():
      tconv.zero_grad(set_to_none=True)
      xt.grad = None
      (tconv(xt) * ctt).sum().backward()

    xj, ctj = jnp.asarray(x), jnp.asarray(ct)
    argnums = (0, 1) if i > 0 else 0
    g = jax.jit(jax.grad(lambda p_, x_: jnp.sum(mod.apply({"params": p_}, x_) * ctj),
                         argnums=argnums))
    print(f"band {b} conv_{i}  {list(x.shape)}  {med_ms(run_torch):.1f}  "
          f"{med_ms(lambda: jax.block_until_ready(g(params, xj))):.1f}", flush=True)
    cin, width = 32, yshape[-1]
