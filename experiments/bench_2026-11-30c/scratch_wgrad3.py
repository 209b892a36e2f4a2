import os
import sys
import time
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import med  # pylint: disable=g-import-not-at-top
HI = jax.lax.Precision.HIGHEST
rng = np.random.default_rng(0)
for shape in ((8, 32, 63, 257), (8, 32, 250, 129)):
  x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
  ct = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
  w0 = jnp.zeros((32, 32, 3, 9))
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (4, 4)],
      dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=HI)
  dw = lambda x, ct: jax.vjp(lambda w: conv(x, w), w0)[1](ct)[0]
  ref = jax.jit(dw)
  def split(g):
    def f(x, ct):
      xs = x.reshape(g, -1, *x.shape[1:]); cs = ct.reshape(g, -1, *ct.shape[1:])
      return jax.vmap(dw)(xs, cs).sum(0)
    return jax.jit(f)
  def seq(g):
    def f(x, ct):
      xs = x.reshape(g, -1, *x.shape[1:]); cs = ct.reshape(g, -1, *ct.shape[1:])
      return sum(dw(xs[i], cs[i]) for i in range(g))
    return jax.jit(f)
  r = ref(x, ct)
  for name, f in (("xla", ref), ("vmap2", split(2)), ("vmap4", split(4)), ("vmap8", split(8)), ("seq2", seq(2))):
    err = float(jnp.max(jnp.abs(f(x, ct) - r)) / jnp.max(jnp.abs(r)))
    print(shape, name, med(lambda: jax.block_until_ready(f(x, ct))), f"rel err {err:.1e}", flush=True)
