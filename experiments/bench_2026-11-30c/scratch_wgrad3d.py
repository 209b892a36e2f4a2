import os
import sys
import time
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import med  # pylint: disable=g-import-not-at-top
HI = jax.lax.Precision.HIGHEST
rng = np.random.default_rng(0)
for shape in ((8, 32, 63, 257), (8, 64, 63, 129), (8, 32, 250, 65)):
  n, c, h, wd = shape
  x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
  ct = jnp.asarray(rng.standard_normal((n, 32, h, wd)).astype(np.float32))
  kw = 9 if c == 32 else 5
  w0 = jnp.zeros((32, c, 3, kw))
  pw = (kw - 1) // 2
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (pw, pw)],
      dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=HI)
  conv3 = lambda x, w: jax.lax.conv_general_dilated(x[:, :, None], w[:, :, None], (1, 1, 1), [(0, 0), (1, 1), (pw, pw)],
      dimension_numbers=("NCDHW", "OIDHW", "NCDHW"), precision=HI)[:, :, 0]
  conv1 = lambda x, w: sum(jax.lax.conv_general_dilated(  # time taps as 3 shifted 1-D convs along W, time folded into batch
      jnp.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))[:, :, t:t + h].transpose(0, 2, 1, 3).reshape(n * h, c, wd),
      w[:, :, t], (1,), [(pw, pw)], dimension_numbers=("NCH", "OIH", "NCH"), precision=HI)
      .reshape(n, h, 32, wd).transpose(0, 2, 1, 3) for t in range(3))
  ref = jax.jit(lambda x, ct: jax.vjp(lambda w: conv(x, w), w0)[1](ct)[0])
  d3 = jax.jit(lambda x, ct: jax.vjp(lambda w: conv3(x, w), w0)[1](ct)[0])
  d1 = jax.jit(lambda x, ct: jax.vjp(lambda w: conv1(x, w), w0)[1](ct)[0])
  r = ref(x, ct)
  for name, f in (("2-D (today)", ref), ("3-D unit axis", d3), ("1-D x3 taps", d1)):
    txt = f.lower(x, ct).compile().as_text()
    err = float(jnp.max(jnp.abs(f(x, ct) - r)) / jnp.max(jnp.abs(r)))
    print(shape, name, med(lambda: jax.block_until_ready(f(x, ct))), f"rel err {err:.1e}",
          "ynn" if "__ynn_fusion" in txt else "no-ynn", flush=True)
