"""Scratch: DAC's MRD with channel-last feature maps (``[B, T, F, C]``) vs ours today
(``[B, C, T, F]``), the discriminator step (D loss on fake and real, weight
gradients), full size, 16 kHz, batch 8 x 2 s; median of 5 after two warm-ups, one
process. The profile of today's MRD 2048 D step spent 241 of 850 ms in 255
transposes around the convolutions (XLA CPU's conv libraries are channel-last).

  python experiments/bench_2026-11-30c/mrd_channels_last.py [--fft 2048]
"""
import os
import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, ".")
from neurocodec_jax.models import discriminators as ours  # pylint: disable=g-import-not-at-top
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import med_ms  # pylint: disable=g-import-not-at-top

HI = jax.lax.Precision.HIGHEST
p = argparse.ArgumentParser()
p.add_argument("--fft", type=int, default=2048)
args = p.parse_args()


def conv_nhwc(x, w, strides, padding):
  """``x [B, H, W, C]``, ``w [O, C, kh, kw]`` (torch layout); stride along W only,
  as a stride-1 conv over the stride's phases stacked as channels."""
  o, c, kh, kw = w.shape
  s = strides[1]
  ph, pw = padding
  if s == 1:
    return jax.lax.conv_general_dilated(x, w, (1, 1), ((ph, ph), (pw, pw)),
                                        dimension_numbers=("NHWC", "OIHW", "NHWC"),
                                        precision=HI)
  width = x.shape[2]
  n_out = (width + 2 * pw - kw) // s + 1
  m = -(-kw // s)
  length = n_out + m - 1
  x = jnp.pad(x, ((0, 0), (0, 0), (pw, max(0, s * length - pw - width)), (0, 0)))[:, :, :s * length]
  b, h = x.shape[:2]
  x = x.reshape(b, h, length, s * c)            # phase r of channel k -> channel r * c + k
  w = jnp.pad(w, ((0, 0), (0, 0), (0, 0), (0, s * m - kw)))
  w = jnp.moveaxis(w.reshape(o, c, kh, m, s), -1, 1).reshape(o, s * c, kh, m)
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((ph, ph), (0, 0)),
                                      dimension_numbers=("NHWC", "OIHW", "NHWC"), precision=HI)


def wn(p):
  v, g = p["weight_v"], p["weight_g"]
  return v * (g / jnp.sqrt(jnp.sum(v * v, axis=(1, 2, 3), keepdims=True)))


def mrd_cl(params, x, window):
  spec = ours.mrd_spectrogram(x, window)                 # [B, 2, T, F]
  spec = jnp.transpose(spec, (0, 2, 3, 1))               # [B, T, F, 2]
  n_bins = window // 2 + 1
  edges = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in ours.BANDS]
  fmap, outs = [], []
  for bi, (lo, hi) in enumerate(edges):
    band = spec[:, :, lo:hi]
    for i, (k, s, pd) in enumerate(ours.MRD_LAYERS):
      lp = params[f"band_{bi}_conv_{i}"]
      band = jax.nn.leaky_relu(conv_nhwc(band, wn(lp), s, pd) + lp["bias"], 0.1)
      fmap.append(band)
    outs.append(band)
  y = jnp.concatenate(outs, axis=2)
  lp = params["conv_post"]
  fmap.append(conv_nhwc(y, wn(lp), (1, 1), (1, 1)) + lp["bias"])
  return fmap


rng = np.random.default_rng(0)
fake, real = (jnp.asarray(rng.standard_normal((8, 1, 32000)).astype(np.float32) * 0.1)
              for _ in range(2))
mod = ours.MRD(args.fft)
params = mod.init(jax.random.PRNGKey(0), fake)["params"]
norm = lambda x: ours.Discriminator(periods=(), fft_sizes=())  # unused: raw MRD on both sides
d_loss = lambda maps_f, maps_r: jnp.mean(maps_f[-1] ** 2) + jnp.mean((1 - maps_r[-1]) ** 2)
today = jax.jit(jax.grad(lambda p_, f, r: d_loss(mod.apply({"params": p_}, f),
                                                 mod.apply({"params": p_}, r))))
cl = jax.jit(jax.grad(lambda p_, f, r: d_loss(mrd_cl(p_, f, args.fft), mrd_cl(p_, r, args.fft))))
# Same maps (channel-last transposed back) and gradients?
m1 = mod.apply({"params": params}, fake)
m2 = mrd_cl(params, fake, args.fft)
err = max(float(jnp.max(jnp.abs(a - jnp.transpose(b, (0, 3, 1, 2))))) for a, b in zip(m1, m2))
g1, g2 = today(params, fake, real), cl(params, fake, real)
gerr = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-30))
           for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)))
print(f"fft {args.fft}: maps max|diff| {err:.1e}, grads max rel diff {gerr:.1e}")
g_today = jax.jit(jax.grad(lambda f, p_, r: jnp.mean((1 - mod.apply({"params": p_}, f)[-1]) ** 2)
                         + sum(jnp.mean(jnp.abs(a - b)) for a, b in zip(
                             mod.apply({"params": p_}, f)[:-1], mod.apply({"params": p_}, r)[:-1]))))
g_cl = jax.jit(jax.grad(lambda f, p_, r: jnp.mean((1 - mrd_cl(p_, f, args.fft)[-1]) ** 2)
                      + sum(jnp.mean(jnp.abs(a - b)) for a, b in zip(
                          mrd_cl(p_, f, args.fft)[:-1], mrd_cl(p_, r, args.fft)[:-1]))))
for _ in range(2):
  print(f"  generator side (input gradient): today "
        f"{med_ms(lambda: jax.block_until_ready(g_today(fake, params, real))):.1f} ms   channel-last "
        f"{med_ms(lambda: jax.block_until_ready(g_cl(fake, params, real))):.1f} ms", flush=True)
for _ in range(2):
  print(f"  D step: today {med_ms(lambda: jax.block_until_ready(today(params, fake, real))):.1f} ms   "
        f"channel-last {med_ms(lambda: jax.block_until_ready(cl(params, fake, real))):.1f} ms",
        flush=True)
