import sys, glob, gzip, json, collections, os, shutil
sys.path.insert(0, ".")
import jax, jax.numpy as jnp, numpy as np
from neurocodec_jax import losses
from neurocodec_jax.models import discriminators as ours
sub = sys.argv[1]
kind, n = sub.split(":")
periods, ffts = ((int(n),), ()) if kind == "mpd" else ((), (int(n),))
mine = ours.Discriminator(periods=periods, fft_sizes=ffts, sample_rate=16000)
rng = np.random.default_rng(0)
f_, r_ = (jnp.asarray(rng.standard_normal((8, 1, 32000)).astype(np.float32) * 0.1) for _ in range(2))
params = mine.init(jax.random.PRNGKey(0), f_)["params"]
d_loss = lambda p, f, r: losses.discriminator_loss(mine.apply({"params": p}, f), mine.apply({"params": p}, r))
g = jax.jit(jax.grad(d_loss))
for _ in range(3): jax.block_until_ready(g(params, f_, r_))
d = "/tmp/prof_" + sub.replace(":", "")
shutil.rmtree(d, ignore_errors=True)
with jax.profiler.trace(d, create_perfetto_trace=True):
  for _ in range(3): jax.block_until_ready(g(params, f_, r_))
path = glob.glob(d + "/**/*.trace.json.gz", recursive=True)[0]
ev = json.load(gzip.open(path))
evs = ev["traceEvents"] if isinstance(ev, dict) else ev
tot = collections.Counter(); cnt = collections.Counter()
for e in evs:
  if e.get("ph") == "X" and "dur" in e:
    nm = e.get("name", "")
    tot[nm] += e["dur"] / 3e3; cnt[nm] += 1
for nm, t in tot.most_common(45):
  print(f"{t:8.1f} ms  x{cnt[nm] // 3:4d}  {nm[:110]}")
print("---- by kind")
import re
agg = collections.Counter(); n_ = collections.Counter()
for nm, t in tot.items():
  if "Execute" in nm or nm.startswith("$"): continue
  k = re.sub(r"\.\d+$", "", nm)
  agg[k] += t; n_[k] += cnt[nm] // 3
for k, t in agg.most_common(25): print(f"{t:8.1f} ms  x{n_[k]:4d}  {k}")
print("sum", sum(agg.values()))
