"""Where the demo step's discriminator time goes, per XLA op (jax.profiler trace).

The two halves as steps.py runs them, the demo preset's discriminator (width 0.0625,
MPD 2, 3, 5, MRD 512, 128; 16 kHz, batch 8 x 2 s): the D step (weight gradients on
fake and real) and the generator side (input gradient), one program each.
  python experiments/bench_2026-11-30e/demo_disc_profile.py [--parts mpd:2 mrd:512 ...]
"""
import argparse, collections, glob, gzip, json, os, re, shutil, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
import jax, jax.numpy as jnp, numpy as np
from bench.common import block, median_seconds, set_malloc
from neurocodec_jax import losses
from neurocodec_jax.models import discriminators as D


def programs(mine):
  maps = lambda p, x: mine.apply({"params": p}, x)
  d_step = jax.jit(jax.grad(lambda p, f, r: losses.discriminator_loss(maps(p, f), maps(p, r))))
  g_side = jax.jit(jax.grad(lambda f, p, r: sum(losses.generator_loss(maps(p, f), maps(p, r)))))
  return d_step, g_side


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--parts", nargs="*", default=["all", "mpd:2", "mpd:3", "mpd:5", "mrd:512", "mrd:128"])
  ap.add_argument("--profile", nargs="*", default=["all"])
  ap.add_argument("--repeats", type=int, default=7)
  args = ap.parse_args()
  set_malloc("keep")
  rng = np.random.default_rng(0)
  f_, r_ = (jnp.asarray(rng.standard_normal((8, 1, 32000)).astype(np.float32) * 0.1) for _ in range(2))
  for part in args.parts:
    if part == "all":
      periods, ffts = (2, 3, 5), (512, 128)
    else:
      kind, n = part.split(":")
      periods, ffts = ((int(n),), ()) if kind == "mpd" else ((), (int(n),))
    mine = D.Discriminator(periods=periods, fft_sizes=ffts, sample_rate=16000, width=0.0625)
    params = mine.init(jax.random.PRNGKey(0), f_)["params"]
    d_step, g_side = programs(mine)
    runs = {"D step": lambda: block(d_step(params, f_, r_)),
            "generator side": lambda: block(g_side(f_, params, r_))}
    for name, fn in runs.items():
      ms = 1e3 * median_seconds(fn, args.repeats, 2)
      print(json.dumps(dict(part=part, half=name, ms=round(ms, 2))), flush=True)
    if part not in args.profile:
      continue
    d = "/tmp/prof_demo_" + part.replace(":", "")
    shutil.rmtree(d, ignore_errors=True)
    with jax.profiler.trace(d):
      for _ in range(3):
        for fn in runs.values():
          fn()
    path = glob.glob(d + "/**/*.trace.json.gz", recursive=True)[0]
    ev = json.load(gzip.open(path))
    evs = ev["traceEvents"] if isinstance(ev, dict) else ev
    tot, cnt = collections.Counter(), collections.Counter()
    for e in evs:
      if e.get("ph") == "X" and "dur" in e:
        tot[e.get("name", "")] += e["dur"] / 3e3
        cnt[e.get("name", "")] += 1
    agg, n_ = collections.Counter(), collections.Counter()
    for nm, t in tot.items():
      if "Execute" in nm or nm.startswith("$") or "jit" in nm.lower():
        print(f"  [{t:8.1f} ms] {nm[:100]}")
        continue
      k = re.sub(r"[._]\d+$", "", nm)
      agg[k] += t
      n_[k] += cnt[nm] // 3
    for k, t in agg.most_common(30):
      print(f"{t:8.1f} ms  x{n_[k]:4d}  {k}")
    print("sum of ops", round(sum(agg.values()), 1))
    for nm, t in tot.most_common(25):
      print(f"{t:8.1f} ms  x{cnt[nm] // 3:4d}  {nm[:110]}")


if __name__ == "__main__":
  main()
