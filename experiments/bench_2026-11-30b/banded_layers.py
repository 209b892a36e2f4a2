"""One MRD-like layer, forward + gradients wrt input and kernel, batch 8: XLA's conv vs
``banded_conv`` as one band matrix vs blocks of 32 output columns (the default).

Run from the repository root: ``python experiments/bench_2026-11-30b/banded_layers.py``
(output: ``banded_layers.txt`` beside it, 2026-11-30, quiet machine).
"""
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, ".")
from neurocodec_jax.models.discriminators import _conv, banded_conv  # pylint: disable=g-import-not-at-top,protected-access


def median_ms(fn, *args, n=7):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(n):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return 1e3 * float(np.median(times))


rng = np.random.default_rng(0)
# (frames, bins, in channels, out channels, stride along bins): the demo's MRD bands
# (FFT 512: 250 frames, 26-64 bins; FFT 128: 1000 frames, 6-17; FFT 2048: 63 frames,
# 102-257), conv_post (3 x 3, one output), and wider channel counts.
for frames, bins, c, o, s in [(250, 39, 2, 2, 1), (250, 39, 2, 2, 2), (250, 64, 2, 2, 1),
                              (250, 64, 2, 2, 2), (1000, 16, 2, 2, 1), (1000, 16, 2, 2, 2),
                              (63, 102, 2, 2, 1), (63, 256, 2, 2, 1), (63, 256, 2, 2, 2),
                              (63, 257, 2, 1, 1), (250, 64, 8, 8, 2), (250, 25, 32, 32, 1),
                              (250, 39, 32, 32, 2)]:
  kernel, pad = ((3, 3), (1, 1)) if o == 1 else ((3, 9), (1, 4))
  x = jnp.asarray(rng.standard_normal((8, c, frames, bins)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((o, c, *kernel)), jnp.float32)
  strides = (1, s)
  forms = {
      "conv": lambda x, w: _conv(x, w, strides, tuple((p, p) for p in pad),
                                 ("NCHW", "OIHW", "NCHW"), 1),
      "one matrix": lambda x, w: banded_conv(x, w, strides, pad, block=10 ** 9),
      "blocks (default)": lambda x, w: banded_conv(x, w, strides, pad)}
  grad = lambda f: jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.tanh(f(x, w))), argnums=(0, 1)))
  row = "  ".join(f"{k} {median_ms(grad(f), x, w):7.2f}" for k, f in forms.items())
  print(f"frames {frames:4d} bins {bins:3d} channels {c:2d}->{o:2d} stride {s}: {row} ms",
        flush=True)
