"""Which model ops the demo discriminator's fusions come from (time per op name).

Profiles the demo discriminator's D step and generator side (as demo_disc_profile.py)
and maps each fusion's time to the jax op name in its HLO metadata (band and layer
indices merged), prefixed D or G for the program.
  python experiments/bench_2026-11-30e/demo_copy_sources.py [mpd:P | mrd:N]
"""
import collections, glob, gzip, json, os, re, shutil, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
import jax, jax.numpy as jnp, numpy as np
from bench.common import set_malloc
from neurocodec_jax import losses
from neurocodec_jax.models import discriminators as D

set_malloc("keep")
rng = np.random.default_rng(0)
f_, r_ = (jnp.asarray(rng.standard_normal((8, 1, 32000)).astype(np.float32) * 0.1) for _ in range(2))
periods, ffts = (2, 3, 5), (512, 128)
if len(sys.argv) > 1:
  kind, n = sys.argv[1].split(":")
  periods, ffts = ((int(n),), ()) if kind == "mpd" else ((), (int(n),))
mine = D.Discriminator(periods=periods, fft_sizes=ffts, sample_rate=16000, width=0.0625)
params = mine.init(jax.random.PRNGKey(0), f_)["params"]
maps = lambda p, x: mine.apply({"params": p}, x)
progs = {
    "D": jax.jit(jax.grad(lambda p, f, r: losses.discriminator_loss(maps(p, f), maps(p, r)))),
    "G": jax.jit(jax.grad(lambda f, p, r: sum(losses.generator_loss(maps(p, f), maps(p, r)))))}
args = {"D": (params, f_, r_), "G": (f_, params, r_)}
src = {}
for k, fn in progs.items():
  text = fn.lower(*args[k]).compile().as_text()
  entry = text[text.index("ENTRY"):]
  for line in entry.splitlines():
    m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = ", line)
    opn = re.search(r'op_name="([^"]+)"', line)
    if m and opn:
      name = opn.group(1).replace("jit(<lambda>)/", "")
      name = re.sub(r"disc_\d+", "disc", re.sub(r"band_\d+_conv_(\d+)", r"band_conv_\1", name))
      src[(k, m.group(1))] = k + " " + name
for k in progs:
  for _ in range(3):
    jax.block_until_ready(progs[k](*args[k]))
d = "/tmp/prof_copy"
shutil.rmtree(d, ignore_errors=True)
with jax.profiler.trace(d):
  for _ in range(3):
    for k in progs:
      jax.block_until_ready(progs[k](*args[k]))
ev = json.load(gzip.open(glob.glob(d + "/**/*.trace.json.gz", recursive=True)[0]))
evs = ev["traceEvents"] if isinstance(ev, dict) else ev
# Thunk names are unique per program but not across the two; attribute by name to
# whichever program has it (both: split evenly).
by_op = collections.Counter()
for e in evs:
  if e.get("ph") != "X" or "dur" not in e:
    continue
  nm = e.get("name", "")
  if "Execute" in nm or nm.startswith("$"):
    continue
  hits = [src[(k, nm)] for k in progs if (k, nm) in src]
  kind = re.sub(r"[._]\d+$", "", nm)
  for h in hits or ["?"]:
    by_op[(kind, h)] += e["dur"] / 3e3 / max(1, len(hits))
for (kind, op), t in by_op.most_common(60):
  print(f"{t:7.1f} ms  {kind:26s} {op}")
print("total", round(sum(by_op.values()), 1))
