"""Prototype: the demo-width MRD's banded convs in a [B, frames, C, bins] layout.

Hypothesis (from demo_disc_profile.txt): at the demo's width the discriminator step's
time is mostly layout copies around banded_conv's matmul (copy_bitcast 107 ms, x761,
of 335 op-ms; the matmuls 72 ms). With maps stored [B, H, C, W] each layer is
``x.reshape(B * H, C * W) @ D[C * W, kh * O * W']`` (a free reshape in, the output
already [B, H, kh, O, W']); the kh row taps are summed after the matmul over shifted
rows (one fused pad + slice + add) instead of stacking shifted inputs before it.
Same parameters, same maps (checked), timed beside the shipped form.

  python experiments/bench_2026-11-30e/mrd_rows_layout.py
"""
import json, os, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
import jax, jax.numpy as jnp, numpy as np
from bench.common import block, median_seconds, set_malloc
from neurocodec_jax import losses
from neurocodec_jax.models import discriminators as D

HIGHEST = jax.lax.Precision.HIGHEST


def banded_rows(x, w, strides, padding, block=D.BANDED_BLOCK):
  """``x [B, H, C, W]``, ``w [O, C, kh, kw]`` -> ``[B, H', O, W']``, stride 1 along H."""
  o, c, kh, kw = w.shape
  (sh, sw), (ph, pw) = strides, padding
  assert sh == 1
  b, h, _, width = x.shape
  n_out = (width + 2 * pw - kw) // sw + 1
  h_out = h + 2 * ph - kh + 1
  if n_out <= block + block // 2 or kw <= 3:
    band = D._band_matrix(kw, width, sw, pw)                         # [kw, W, W']
    dense = jnp.einsum("ocht,tkj->ckhoj", w, band, precision=HIGHEST)
    z = jnp.matmul(x.reshape(b * h, c * width), dense.reshape(c * width, kh * o * n_out),
                   precision=HIGHEST).reshape(b, h, kh, o, n_out)
  else:
    n_block, window = block, (block - 1) * sw + kw
    n = -(-n_out // block)
    need = (n * block - 1) * sw + kw
    xp = D._pad_to(x, pw, need, axis=3)
    rows = jnp.stack([xp[..., q * block * sw:q * block * sw + window] for q in range(n)],
                     axis=2)                                          # [B, H, n, C, win]
    band = D._band_matrix(kw, window, sw, 0)
    dense = jnp.einsum("ocht,tkj->ckhoj", w, band, precision=HIGHEST)
    z = jnp.matmul(rows.reshape(b * h * n, c * window),
                   dense.reshape(c * window, kh * o * n_block), precision=HIGHEST)
    z = z.reshape(b, h, n, kh, o, n_block)
    z = jnp.moveaxis(z, 2, 4).reshape(b, h, kh, o, n * n_block)[..., :n_out]
  zp = jnp.pad(z, ((0, 0), (ph, ph), (0, 0), (0, 0), (0, 0)))
  return sum(zp[:, t:t + h_out, t] for t in range(kh))


def banded_rows_in(x, w, strides, padding, block=D.BANDED_BLOCK):
  """As banded_rows, the kh row taps stacked on the input side (no kh x output)."""
  o, c, kh, kw = w.shape
  (sh, sw), (ph, pw) = strides, padding
  b, h, _, width = x.shape
  n_out = (width + 2 * pw - kw) // sw + 1
  h_out = h + 2 * ph - kh + 1
  xp = jnp.pad(x, ((0, 0), (ph, ph), (0, 0), (0, 0)))
  rows = jnp.stack([xp[:, t:t + h_out] for t in range(kh)], axis=2)   # [B, H', kh, C, W]
  if n_out <= block + block // 2 or kw <= 3:
    band = D._band_matrix(kw, width, sw, pw)
    dense = jnp.einsum("ocht,tkj->hckoj", w, band, precision=HIGHEST)
    y = jnp.matmul(rows.reshape(b * h_out, kh * c * width),
                   dense.reshape(kh * c * width, o * n_out), precision=HIGHEST)
    return y.reshape(b, h_out, o, n_out)
  n_block, window = block, (block - 1) * sw + kw
  n = -(-n_out // block)
  need = (n * block - 1) * sw + kw
  rows = D._pad_to(rows, pw, need, axis=4)
  rows = jnp.stack([rows[..., q * block * sw:q * block * sw + window] for q in range(n)],
                   axis=2)                                            # [B, H', n, kh, C, win]
  band = D._band_matrix(kw, window, sw, 0)
  dense = jnp.einsum("ocht,tkj->hckoj", w, band, precision=HIGHEST)
  y = jnp.matmul(rows.reshape(b * h_out * n, kh * c * window),
                 dense.reshape(kh * c * window, o * n_block), precision=HIGHEST)
  y = jnp.moveaxis(y.reshape(b, h_out, n, o, n_block), 2, 3)
  return y.reshape(b, h_out, o, n * n_block)[..., :n_out]


CONV = banded_rows


def wn(p):
  v, g = p["weight_v"], p["weight_g"]
  return v * (g / jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2, 3), keepdims=True)))


def mrd_rows(params, x, window_length):
  """DAC-layout maps of one MRD, computed in [B, H, C, W]."""
  spec = D.mrd_spectrogram(x, window_length)                          # [B, 2, H, W]
  spec = jnp.transpose(spec, (0, 2, 1, 3))                            # [B, H, 2, W]
  n_bins = window_length // 2 + 1
  edges = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in D.BANDS]
  dac = lambda y: jnp.transpose(y, (0, 2, 1, 3))
  fmap, outs = [], []
  for bi, (lo, hi) in enumerate(edges):
    band = spec[..., lo:hi]
    for i, (k, s, p) in enumerate(D.MRD_LAYERS):
      q = params[f"band_{bi}_conv_{i}"]
      band = CONV(band, wn(q), s, p) + q["bias"][:, None]
      band = jax.nn.leaky_relu(band, 0.1)
      fmap.append(dac(band))
    outs.append(band)
  x = jnp.concatenate(outs, axis=3)
  q = params["conv_post"]
  fmap.append(dac(CONV(x, wn(q), (1, 1), (1, 1)) + q["bias"][:, None]))
  return fmap


def main():
  global CONV
  if "--input_taps" in sys.argv:
    CONV = banded_rows_in
  set_malloc("keep")
  rng = np.random.default_rng(0)
  f_, r_ = (jnp.asarray(rng.standard_normal((8, 1, 32000)).astype(np.float32) * 0.1) for _ in range(2))
  for fft in (512, 128):
    mine = D.Discriminator(periods=(), fft_sizes=(fft,), sample_rate=16000, width=0.0625)
    params = mine.init(jax.random.PRNGKey(0), f_)["params"]
    norm = lambda x: 0.8 * (x - x.mean(-1, keepdims=True)) / (
        jnp.abs(x - x.mean(-1, keepdims=True)).max(-1, keepdims=True) + 1e-9)
    shipped = lambda p, x: mine.apply({"params": p}, x)
    rows = lambda p, x: [mrd_rows(p["disc_0"], norm(x), fft)]
    a, b = shipped(params, f_), rows(params, f_)
    err = max(float(jnp.max(jnp.abs(u - v)) / jnp.max(jnp.abs(u))) for u, v in zip(a[0], b[0]))
    shapes = all(u.shape == v.shape for u, v in zip(a[0], b[0]))
    progs = {}
    for name, maps in (("shipped", shipped), ("rows", rows)):
      progs[name] = (
          jax.jit(jax.grad(lambda p, f, r, m=maps: losses.discriminator_loss(m(p, f), m(p, r)))),
          jax.jit(jax.grad(lambda f, p, r, m=maps: sum(losses.generator_loss(m(p, f), m(p, r))))))
    gd = [jax.tree.leaves(progs[n][0](params, f_, r_)) for n in progs]
    gg = [progs[n][1](f_, params, r_) for n in progs]
    gerr = max(float(jnp.max(jnp.abs(u - v)) / jnp.max(jnp.abs(u))) for u, v in zip(*gd))
    ierr = float(jnp.max(jnp.abs(gg[0] - gg[1])) / jnp.max(jnp.abs(gg[0])))
    times = {(n, h): [] for n in progs for h in ("D", "G")}
    fns = {(n, "D"): (lambda d=progs[n][0]: block(d(params, f_, r_))) for n in progs}
    fns.update({(n, "G"): (lambda g=progs[n][1]: block(g(f_, params, r_))) for n in progs})
    for fn in fns.values():
      fn(); fn()
    for _ in range(7):
      for k, fn in fns.items():
        times[k].append(median_seconds(fn, 1, 0))
    row = dict(fft=fft, shapes_equal=shapes, maps_rel_err=err, dstep_grad_rel_err=gerr,
               gside_grad_rel_err=ierr,
               **{f"{n}_{h}_ms": round(1e3 * float(np.median(v)), 2) for (n, h), v in times.items()})
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()
