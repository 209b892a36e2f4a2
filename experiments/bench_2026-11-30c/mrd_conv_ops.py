"""The MRD's 32 -> 32 (3, 9) conv of DAC's size, its three parts timed apart (forward,
input gradient, weight gradient), XLA's conv vs torch (oneDNN), bare convs, median of
7 after two warm-ups, one process.

  python experiments/bench_2026-11-30c/mrd_conv_ops.py [--tune_malloc]
"""
import os
import ctypes
import sys
import time

if "--tune_malloc" in sys.argv:
  _libc = ctypes.CDLL("libc.so.6")
  for _opt, _val in ((-4, 0), (-1, -1), (-8, 1)):
    assert _libc.mallopt(_opt, _val) == 1

import jax
import jax.numpy as jnp
import numpy as np
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import med  # pylint: disable=g-import-not-at-top

torch.set_num_threads(2)
HI = jax.lax.Precision.HIGHEST


rng = np.random.default_rng(0)
for shape, stride in (((8, 32, 63, 257), 1), ((8, 32, 63, 129), 2), ((8, 32, 250, 129), 1)):
  x = rng.standard_normal(shape).astype(np.float32)
  w = (rng.standard_normal((32, 32, 3, 9)) * 0.05).astype(np.float32)
  conv = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, stride), [(1, 1), (4, 4)], dimension_numbers=("NCHW", "OIHW", "NCHW"),
      precision=HI)
  y, vjp = jax.vjp(conv, jnp.asarray(x), jnp.asarray(w))
  ct = jnp.asarray(rng.standard_normal(y.shape).astype(np.float32))
  fwd = jax.jit(conv)
  dx = jax.jit(lambda x, w, ct: jax.vjp(lambda x: conv(x, w), x)[1](ct)[0])
  dw = jax.jit(lambda x, w, ct: jax.vjp(lambda w: conv(x, w), w)[1](ct)[0])
  xj, wj = jnp.asarray(x), jnp.asarray(w)
  xt, wt, ctt = torch.tensor(x), torch.tensor(w), torch.tensor(np.asarray(ct))
  tf = lambda: torch.nn.functional.conv2d(xt, wt, stride=(1, stride), padding=(1, 4))
  tdx = lambda: torch.ops.aten.convolution_backward(ctt, xt, wt, None, (1, stride), (1, 4),
                                                     (1, 1), False, (0, 0), 1,
                                                     (True, False, False))
  tdw = lambda: torch.ops.aten.convolution_backward(ctt, xt, wt, None, (1, stride), (1, 4),
                                                     (1, 1), False, (0, 0), 1,
                                                     (False, True, False))
  b = lambda f: (lambda: jax.block_until_ready(f()))
  print(f"{shape} stride {stride}: forward torch {med(tf)} ours "
        f"{med(b(lambda: fwd(xj, wj)))} | input grad torch {med(tdx)} ours "
        f"{med(b(lambda: dx(xj, wj, ct)))} | weight grad torch {med(tdw)} ours "
        f"{med(b(lambda: dw(xj, wj, ct)))} ms", flush=True)
