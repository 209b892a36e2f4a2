import os
import sys
import time
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import med  # pylint: disable=g-import-not-at-top
HI = jax.lax.Precision.HIGHEST
rng = np.random.default_rng(0)
for shape in ((8, 32, 63, 257), (8, 32, 250, 65)):
  n, c, h, wd = shape
  x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
  ct = jnp.asarray(rng.standard_normal((n, 32, h, wd)).astype(np.float32))
  w = jnp.asarray(rng.standard_normal((32, c, 3, 9)).astype(np.float32) * 0.05)
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (4, 4)],
      dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=HI)
  def conv_taps(x, w):   # the 3 time taps as channels: [B, 3C, H, W] with a (1, 9) kernel
    xp = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    xs = jnp.concatenate([xp[:, :, t:t + h] for t in range(3)], axis=1)
    wt = jnp.transpose(w, (0, 2, 1, 3)).reshape(32, 3 * c, 1, 9)
    return jax.lax.conv_general_dilated(xs, wt, (1, 1), [(0, 0), (4, 4)],
        dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=HI)
  for name, cf in (("2-D (today)", conv), ("taps in channels", conv_taps)):
    dw = jax.jit(lambda x, ct: jax.vjp(lambda w_: cf(x, w_), w)[1](ct)[0])
    allg = jax.jit(jax.grad(lambda x, w_: jnp.sum(cf(x, w_) * ct), argnums=(0, 1)))
    print(shape, name, "dw", med(lambda: jax.block_until_ready(dw(x, ct))), " fwd+dx+dw",
          med(lambda: jax.block_until_ready(allg(x, w))), flush=True)
