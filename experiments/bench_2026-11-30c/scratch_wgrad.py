import os
import ctypes, sys, time
_libc = ctypes.CDLL("libc.so.6")
for _opt, _val in ((-4, 0), (-1, -1), (-8, 1)): _libc.mallopt(_opt, _val)
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import med_ms  # pylint: disable=g-import-not-at-top
HI = jax.lax.Precision.HIGHEST
rng = np.random.default_rng(0)
for shape in ((8, 32, 63, 257), (8, 32, 250, 129)):
  n, c, h, wd = shape
  x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
  ct = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
  w0 = jnp.zeros((32, 32, 3, 9))
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (4, 4)],
      dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=HI)
  ref = jax.jit(lambda x, ct: jax.vjp(lambda w: conv(x, w), w0)[1](ct)[0])
  def taps27(x, ct):
    xp = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (4, 4)))
    out = [[jnp.einsum("nohw,nchw->oc", ct, xp[:, :, i:i + h, j:j + wd], precision=HI)
            for j in range(9)] for i in range(3)]
    return jnp.stack([jnp.stack(r, -1) for r in out], -2)
  def freq_cols(x, ct):
    xp = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (4, 4)))
    cols = jnp.stack([xp[..., j:j + wd] for j in range(9)], axis=2)  # [n, c, 9, h+2, w]
    out = [jnp.einsum("nohw,nckhw->ock", ct, cols[:, :, :, i:i + h], precision=HI) for i in range(3)]
    return jnp.stack(out, -2)
  def full_cols(x, ct):
    xp = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (4, 4)))
    cols = jnp.stack([xp[:, :, i:i + h, j:j + wd] for i in range(3) for j in range(9)], axis=2)
    return jnp.einsum("nohw,nckhw->ock", ct, cols, precision=HI).reshape(32, 32, 3, 9)
  def nhwc_cols(x, ct):   # channel-last, taps along freq into channels
    xl = jnp.transpose(jnp.pad(x, ((0, 0), (0, 0), (1, 1), (4, 4))), (0, 2, 3, 1))  # n h w c
    ctl = jnp.transpose(ct, (0, 2, 3, 1))
    cols = jnp.concatenate([xl[:, :, j:j + wd] for j in range(9)], axis=-1)  # n h+2 w 9c
    out = [jnp.dot(ctl.reshape(-1, 32).T, cols[:, i:i + h].reshape(-1, 9 * c), precision=HI) for i in range(3)]
    return jnp.stack(out, 0).reshape(3, 32, 9, c).transpose(1, 3, 0, 2)
  r = ref(x, ct)
  for name, f in (("xla", ref), ("taps27", jax.jit(taps27)), ("freq_cols", jax.jit(freq_cols)),
                  ("full_cols", jax.jit(full_cols)), ("nhwc_cols", jax.jit(nhwc_cols))):
    err = float(jnp.max(jnp.abs(f(x, ct) - r)) / jnp.max(jnp.abs(r)))
    print(shape, name, f"{med_ms(lambda: jax.block_until_ready(f(x, ct))):.1f} ms  rel err {err:.1e}", flush=True)
