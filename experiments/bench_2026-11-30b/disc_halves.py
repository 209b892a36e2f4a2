"""DAC's full discriminator, the train step's two halves timed apart, ours vs DAC torch:
weight gradients only (the D step) and the input gradient only (the generator's terms).
Batch 8 x 2 s at 16 kHz, interleaved, median of 3 after a warm-up, one process.
Run from the repository root: ``python experiments/bench_2026-11-30b/disc_halves.py``.
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, ".")
from bench.common import block, median_seconds  # pylint: disable=g-import-not-at-top
from neurocodec_jax.models import discriminators as ours  # pylint: disable=g-import-not-at-top
from tests.references import torch_discriminator  # pylint: disable=g-import-not-at-top

x_np = (np.random.default_rng(0).standard_normal((8, 1, 32000)) * 0.1).astype(np.float32)
ref = torch_discriminator((2, 3, 5, 7, 11), (2048, 1024, 512), 1.0, 16000)
mine = ours.Discriminator(sample_rate=16000)
params = ours.params_from_torch(ref)
xj = jnp.asarray(x_np)
loss_j = lambda maps: sum(jnp.mean(m ** 2) for d in maps for m in d)
loss_t = lambda maps: sum((m ** 2).mean() for d in maps for m in d)

w_only = jax.jit(jax.grad(lambda p: loss_j(mine.apply({"params": p}, xj))))
x_only = jax.jit(jax.grad(lambda x: loss_j(mine.apply({"params": params}, x))))
both = jax.jit(jax.grad(lambda p, x: loss_j(mine.apply({"params": p}, x)), argnums=(0, 1)))


def torch_run(weights: bool, inputs: bool):
  def run():
    ref.zero_grad(set_to_none=True)
    ref.requires_grad_(weights)
    xt = torch.from_numpy(x_np).requires_grad_(inputs)
    loss_t(ref(xt)).backward()
  return run


runs = {
    "weights only: torch": torch_run(True, False),
    "weights only: ours": lambda: block(w_only(params)),
    "input only: torch": torch_run(False, True),
    "input only: ours": lambda: block(x_only(xj)),
    "both: torch": torch_run(True, True),
    "both: ours": lambda: block(both(params, xj)),
}
times = {k: [] for k in runs}
for fn in runs.values():
  fn()
for _ in range(3):
  for k, fn in runs.items():
    times[k].append(median_seconds(fn, 1, 0))
for k, v in times.items():
  print(f"{k:22s} {1e3 * np.median(v):8.1f} ms", flush=True)
