"""Issue 16's last untried lever: conv/matmul precision in the discriminator.

Each sub-discriminator's D step (losses.discriminator_loss on fake and real, weight
gradients), traced once with ``Precision.HIGHEST`` (what we ship) and once with
``Precision.DEFAULT``, timed interleaved in one process; also whether the compiled
programs differ at all and the largest gradient difference.

  python experiments/bench_2026-11-30e/precision_ab.py --widths 1 0.0625 --repeats 5
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import block, median_seconds, set_malloc
from neurocodec_jax import losses
from neurocodec_jax.models import discriminators as D


def d_step_for(mine, precision):
  D.HIGHEST = precision        # read at trace time by _conv and banded_conv
  maps = lambda p, x: mine.apply({"params": p}, x)
  return jax.jit(jax.grad(lambda p, f, r: losses.discriminator_loss(maps(p, f), maps(p, r))))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.0625])
  ap.add_argument("--periods", type=int, nargs="*", default=[2, 3, 5, 7, 11])
  ap.add_argument("--ffts", type=int, nargs="*", default=[2048, 1024, 512])
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "precision_ab.jsonl"))
  args = ap.parse_args()
  set_malloc("keep")
  rng = np.random.default_rng(0)
  fake = jnp.asarray(rng.standard_normal((8, 1, 32000)).astype(np.float32) * 0.1)
  real = jnp.asarray(rng.standard_normal((8, 1, 32000)).astype(np.float32) * 0.1)
  highest = jax.lax.Precision.HIGHEST
  for width in args.widths:
    for kind, arg in [("mpd", p) for p in args.periods] + [("mrd", f) for f in args.ffts]:
      mine = D.Discriminator(periods=(arg,) if kind == "mpd" else (),
                             fft_sizes=(arg,) if kind == "mrd" else (), sample_rate=16000,
                             width=width)
      params = mine.init(jax.random.PRNGKey(0), fake)["params"]
      steps, hlo = {}, {}
      for name, prec in (("highest", highest), ("default", jax.lax.Precision.DEFAULT)):
        fn = d_step_for(mine, prec)
        compiled = fn.lower(params, fake, real).compile()
        hlo[name] = compiled.as_text()
        steps[name] = compiled
      D.HIGHEST = highest
      grads = {k: s(params, fake, real) for k, s in steps.items()}
      diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                 zip(jax.tree.leaves(grads["highest"]), jax.tree.leaves(grads["default"])))
      scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(grads["highest"]))
      strip = lambda t: "\n".join(l for l in t.splitlines() if "operand_precision" not in l)
      same_hlo = (hlo["highest"].replace("operand_precision={highest,highest}", "")
                  == hlo["default"].replace("operand_precision={default,default}", ""))
      times = {k: [] for k in steps}
      for k, s in steps.items():
        block(s(params, fake, real))
      for _ in range(args.repeats):
        for k, s in steps.items():
          times[k].append(median_seconds(lambda s=s: block(s(params, fake, real)), 1, 0))
      row = dict(width=width, part=f"{kind}_{arg}",
                 highest_ms=1e3 * float(np.median(times["highest"])),
                 default_ms=1e3 * float(np.median(times["default"])),
                 max_grad_diff=diff, grad_scale=scale,
                 hlo_same_but_precision=same_hlo,
                 hlo_lines_differ=len(set(strip(hlo["highest"]).splitlines())
                                      ^ set(strip(hlo["default"]).splitlines())))
      row["ratio_default_over_highest"] = row["default_ms"] / row["highest_ms"]
      print(json.dumps(row), flush=True)
      with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  main()
