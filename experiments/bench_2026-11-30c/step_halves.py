"""The full train step's two discriminator halves, each as the step runs it, ours vs
DAC's torch ``GANLoss`` doing the same work (DAC's full discriminator, batch 8 x 2 s
at 16 kHz, fake and real two different signals):

  d_step   D loss on (fake detached, real) + the weight gradients        (the D step)
  g_side   adversarial + 2 x feature loss, gradient wrt the fake only    (D frozen)
  d_cat    ours only: the D step with fake and real in one batch of 16

One half per process (``python experiments/bench_2026-11-30c/step_halves.py d_step``),
interleaved ours/torch, two warm-ups, median of ``--repeats``.
"""
import argparse
import ctypes
import resource
import sys

if "--tune_malloc" in sys.argv:     # before jax's and torch's threads first allocate
  _libc = ctypes.CDLL("libc.so.6")
  for _opt, _val in ((-4, 0), (-1, -1), (-8, 1)):  # M_MMAP_MAX, M_TRIM_THRESHOLD, M_ARENA_MAX
    assert _libc.mallopt(_opt, _val) == 1

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, ".")
from bench.common import block, median_seconds  # pylint: disable=g-import-not-at-top
from neurocodec_jax import losses  # pylint: disable=g-import-not-at-top
from neurocodec_jax.models import discriminators as ours  # pylint: disable=g-import-not-at-top
from tests.references import torch_discriminator  # pylint: disable=g-import-not-at-top

p = argparse.ArgumentParser()
p.add_argument("half", choices=["d_step", "g_side", "d_cat"])
p.add_argument("--repeats", type=int, default=3)
p.add_argument("--sub", default=None, help="one sub-discriminator: mpd:P or mrd:N")
p.add_argument("--tune_malloc", action="store_true")
p.add_argument("--only", default=None, help="run only this side (ours / torch)")
args = p.parse_args()

rng = np.random.default_rng(0)
fake_np, real_np = (rng.standard_normal((2, 8, 1, 32000)) * 0.1).astype(np.float32)
periods, ffts = (2, 3, 5, 7, 11), (2048, 1024, 512)
if args.sub:
  kind, n = args.sub.split(":")
  periods, ffts = ((int(n),), ()) if kind == "mpd" else ((), (int(n),))
ref = torch_discriminator(periods, ffts, 1.0, 16000)
mine = ours.Discriminator(periods=periods, fft_sizes=ffts, sample_rate=16000)
params = ours.params_from_torch(ref)
fake_j, real_j = jnp.asarray(fake_np), jnp.asarray(real_np)
real_t = torch.from_numpy(real_np)


def d_loss(p_, fake, real):
  return losses.discriminator_loss(mine.apply({"params": p_}, fake),
                                   mine.apply({"params": p_}, real))


def d_loss_cat(p_, fake, real):
  maps = mine.apply({"params": p_}, jnp.concatenate([fake, real]))
  b = fake.shape[0]
  split = lambda i: [[m[i * b:(i + 1) * b] for m in d] for d in maps]
  return losses.discriminator_loss(split(0), split(1))


def g_loss(fake, p_, real):
  adv, feat = losses.generator_loss(mine.apply({"params": p_}, fake),
                                    mine.apply({"params": p_}, real))
  return adv + 2 * feat


def t_d_step():
  ref.zero_grad(set_to_none=True)
  ref.requires_grad_(True)
  d_fake, d_real = ref(torch.from_numpy(fake_np)), ref(real_t)
  sum(torch.mean(f[-1] ** 2) + torch.mean((1 - r[-1]) ** 2)
      for f, r in zip(d_fake, d_real)).backward()


def t_g_side():
  ref.requires_grad_(False)
  fake = torch.from_numpy(fake_np).requires_grad_(True)
  d_fake, d_real = ref(fake), ref(real_t)
  adv = sum(torch.mean((1 - f[-1]) ** 2) for f in d_fake)
  feat = sum(torch.nn.functional.l1_loss(fm, rm.detach())
             for f, r in zip(d_fake, d_real) for fm, rm in zip(f[:-1], r[:-1]))
  (adv + 2 * feat).backward()
  return fake.grad


if args.half == "d_step":
  fn = jax.jit(jax.grad(d_loss))
  runs = {"torch": t_d_step, "ours": lambda: block(fn(params, fake_j, real_j))}
elif args.half == "d_cat":
  fn, fn_cat = jax.jit(jax.grad(d_loss)), jax.jit(jax.grad(d_loss_cat))
  runs = {"ours": lambda: block(fn(params, fake_j, real_j)),
          "ours_cat": lambda: block(fn_cat(params, fake_j, real_j))}
else:
  fn = jax.jit(jax.grad(g_loss))
  runs = {"torch": t_g_side, "ours": lambda: block(fn(fake_j, params, real_j))}

if args.only:
  runs = {k: v for k, v in runs.items() if k == args.only}
for f in runs.values():
  f()
  f()
times = {k: [] for k in runs}
for _ in range(args.repeats):
  for k, f in runs.items():
    times[k].append(median_seconds(f, 1, 0))
flt = {}
for k, f in runs.items():
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f()
  flt[k] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
for k, v in times.items():
  print(f"[{flt[k] * 4096 / 2 ** 20:.0f} MB page-faulted per run] ", end="")
  print(f"{args.sub or 'all':8s} {args.half:7s} {k:9s} {1e3 * np.median(v):8.1f} ms  "
        f"({', '.join(f'{1e3 * t:.0f}' for t in v)})", flush=True)
