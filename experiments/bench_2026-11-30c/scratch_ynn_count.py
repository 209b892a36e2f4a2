import re, sys, collections
sys.path.insert(0, ".")
import jax, jax.numpy as jnp, numpy as np
from neurocodec_jax import losses
from neurocodec_jax.models import discriminators as ours
sub = sys.argv[1]
kind, n = sub.split(":")
periods, ffts = ((int(n),), ()) if kind == "mpd" else ((), (int(n),))
mine = ours.Discriminator(periods=periods, fft_sizes=ffts, sample_rate=16000)
x = jnp.zeros((8, 1, 32000))
params = mine.init(jax.random.PRNGKey(0), x)["params"]
d_loss = lambda p, f, r: losses.discriminator_loss(mine.apply({"params": p}, f), mine.apply({"params": p}, r))
txt = jax.jit(jax.grad(d_loss)).lower(params, x, x).compile().as_text()
entry = txt[txt.index("ENTRY"):]
c = collections.Counter()
for l in entry.splitlines():
  m = re.search(r'= \S+ (\w+)\(', l)
  if not m: continue
  k = re.search(r'"kind":"(\w+)"', l)
  name = re.search(r'%(\w+?)(_fusion|\.|\s)', l)
  c[(m.group(1), k.group(1) if k else "")] += 1
for k, v in sorted(c.items(), key=lambda kv: -kv[1])[:15]: print(v, k)
