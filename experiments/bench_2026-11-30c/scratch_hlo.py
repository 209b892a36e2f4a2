import os
import sys
import jax, jax.numpy as jnp, numpy as np
HI = jax.lax.Precision.HIGHEST
x = jnp.ones((8, 32, 63, 257)); ct = jnp.ones((8, 32, 63, 257)); w0 = jnp.zeros((32, 32, 3, 9))
conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (4, 4)],
    dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=HI)
f = jax.jit(lambda x, ct: jax.vjp(lambda w: conv(x, w), w0)[1](ct)[0])
txt = f.lower(x, ct).compile().as_text()
print("\n".join(l for l in txt.splitlines() if "convolution" in l or "ENTRY" in l or "fusion" in l[:60])[:4000])
fw = jax.jit(conv)
print("---- forward")
print("\n".join(l for l in fw.lower(x, w0).compile().as_text().splitlines() if "convolution(" in l)[:2000])
import time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import med  # pylint: disable=g-import-not-at-top
print("weight grad", med(lambda: f(x, ct).block_until_ready()))
