"""One MPD conv layer of DAC's size, forward + input and weight gradients, three ways.

torch's 2-D conv over DAC's [B, C, T/p, p] fold; ours folded to 1-D over [B*p, C, T/p]
(channel-first, before 2026-11-30 11:00) and over [B*p, T/p, C] (channel-last, now).
Bare convs (no weight norm, bias or activation), batch 8, the input shapes DAC's MPD
feeds each layer for a 2 s clip at 16 kHz; median of 7 after warm-up, one process.

  python experiments/bench_2026-11-30/mpd_layouts.py > experiments/bench_2026-11-30/mpd_layouts.txt
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

torch.set_num_threads(2)
HI = jax.lax.Precision.HIGHEST
LAYERS = ((1, 32, 3), (32, 128, 3), (128, 512, 3), (512, 1024, 3), (1024, 1024, 1))
LENGTHS = {2: (16001, 5334, 1778, 593, 198), 11: (2910, 970, 324, 108, 36)}


def med(f, reps=7):
  f(); f()
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
  return np.median(ts) * 1e3


def jax_run(x, w, ct, dn, s):
  loss = lambda x, w: jnp.sum(jax.lax.conv_general_dilated(
      x, w, (s,), [(2, 2)], dimension_numbers=dn, precision=HI) * ct)
  g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  return lambda: jax.block_until_ready(g(x, w))


rng = np.random.default_rng(0)
print("period  layer  torch_2d_ms  ours_fold_nch_ms  ours_fold_nwc_ms")
for p, lengths in LENGTHS.items():
  for (cin, cout, s), tin in zip(LAYERS, lengths):
    xn = rng.standard_normal((8, cin, tin, p)).astype(np.float32)
    wn = (rng.standard_normal((cout, cin, 5, 1)) * 0.1).astype(np.float32)
    tout = (tin + 4 - 5) // s + 1
    ctn = rng.standard_normal((8, cout, tout, p)).astype(np.float32)
    xt, wt = torch.tensor(xn, requires_grad=True), torch.tensor(wn, requires_grad=True)
    ctt = torch.tensor(ctn)

    def run_torch():
      xt.grad = wt.grad = None
      y = torch.nn.functional.conv2d(xt, wt, stride=(s, 1), padding=(2, 0))
      (y * ctt).sum().backward()

    xf = jnp.asarray(np.moveaxis(xn, -1, 1).reshape(8 * p, cin, tin))
    ctf = jnp.asarray(np.moveaxis(ctn, -1, 1).reshape(8 * p, cout, tout))
    wf = jnp.asarray(wn[..., 0])
    nch = jax_run(xf, wf, ctf, ("NCH", "OIH", "NCH"), s)
    nwc = jax_run(jnp.transpose(xf, (0, 2, 1)), wf, jnp.transpose(ctf, (0, 2, 1)),
                  ("NWC", "OIW", "NWC"), s)
    print(f"{p:6d}  {cin}->{cout}  {med(run_torch):.1f}  {med(nch):.1f}  {med(nwc):.1f}",
          flush=True)
