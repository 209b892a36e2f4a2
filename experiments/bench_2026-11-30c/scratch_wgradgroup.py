import os
import sys
import time
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import med  # pylint: disable=g-import-not-at-top
HI = jax.lax.Precision.HIGHEST
rng = np.random.default_rng(0)
for shape in ((8, 32, 63, 257), (8, 32, 250, 65), (8, 64, 63, 129)):
  n, c, h, wd = shape
  kw = 9 if c == 32 else 5
  pw = 4 if c == 32 else 0
  x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
  w = jnp.asarray(rng.standard_normal((32, c, 3, kw)).astype(np.float32) * 0.05)
  conv = lambda x, w, **kw_: jax.lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (pw, pw)],
      dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=HI, **kw_)
  y = conv(x, w)
  ct = jnp.asarray(rng.standard_normal(y.shape).astype(np.float32))
  ref = jax.jit(lambda x, ct: jax.vjp(lambda w_: conv(x, w_), w)[1](ct)[0])
  def grouped(g):
    def f(x, ct):
      xx = jnp.concatenate([x] * g, axis=1)
      return jax.vjp(lambda w_: conv(xx, w_, feature_group_count=g), w)[1](ct)[0]
    return jax.jit(f)
  r = ref(x, ct)
  for name, f in (("today", ref), ("grouped2", grouped(2)), ("grouped4", grouped(4))):
    txt = f.lower(x, ct).compile().as_text()
    err = float(jnp.max(jnp.abs(f(x, ct) - r)) / jnp.max(jnp.abs(r)))
    print(shape, name, med(lambda: jax.block_until_ready(f(x, ct))), f"rel err {err:.1e}",
          "ynn" if "__ynn_fusion" in txt else "no-ynn", flush=True)
