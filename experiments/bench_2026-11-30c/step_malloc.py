"""Our whole train step (the demo's generator, DAC's full discriminator: the step
``bench_original --widths 1`` times), with or without glibc malloc tuned before jax
starts (``--tune_malloc``): minor page faults and time per step, median of
``--repeats`` after two warm-ups.

  python experiments/bench_2026-11-30c/step_malloc.py [--tune_malloc] [--original_config]
"""
import ctypes
import resource
import sys
import time

if "--tune_malloc" in sys.argv:
  _libc = ctypes.CDLL("libc.so.6")
  for _opt, _val in ((-4, 0), (-1, -1), (-8, 1)):   # M_MMAP_MAX, M_TRIM_THRESHOLD, M_ARENA_MAX
    assert _libc.mallopt(_opt, _val) == 1

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, ".")
from bench.bench_step import preset_config, random_batch, train_step  # pylint: disable=g-import-not-at-top
from neurocodec_jax.run import build_run  # pylint: disable=g-import-not-at-top

repeats = 3
if "--original_config" in sys.argv:       # the step bench_original times as ours
  from bench.bench_original import ours_config  # pylint: disable=g-import-not-at-top
  config = ours_config(1.0)
else:                                     # the demo preset with DAC's full discriminator
  config = preset_config("demo", None, True, True)
batch = {k: jnp.asarray(v) for k, v in random_batch(config).items()}
run = build_run(config, example=batch)
_, step, compile_s, temp_mb = train_step(config, run, run.init_state(), batch)
step(); step()
times, faults = [], []
for _ in range(repeats):
  f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  t0 = time.perf_counter()
  step()
  times.append(time.perf_counter() - t0)
  faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) * 4096 / 2 ** 20)
print(f"tune_malloc={'--tune_malloc' in sys.argv} original_config={'--original_config' in sys.argv}  step {1e3 * np.median(times):.0f} ms "
      f"({', '.join(f'{1e3 * t:.0f}' for t in times)}), page-faulted "
      f"{np.median(faults):.0f} MB/step, XLA temp {temp_mb:.0f} MB", flush=True)
