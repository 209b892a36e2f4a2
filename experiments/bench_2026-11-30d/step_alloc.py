"""Our whole train step alone in this process (the demo's generator with DAC's full
discriminator), under one glibc allocator setting chosen before jax starts: time per
step (every repeat, after two warm-ups), minor page faults per step. One JSON line.

  python experiments/bench_2026-11-30d/step_alloc.py --alloc {default,tuned,mmap,arena} \
      --config {demo,original} [--repeats 5] [--late]

Allocator settings (mallopt before any import that allocates much):
  default  glibc as shipped;
  tuned    M_MMAP_MAX=0, M_TRIM_THRESHOLD=off, M_ARENA_MAX=1 (last session's setting);
  mmap     M_MMAP_MAX=0, M_TRIM_THRESHOLD=off (arenas as shipped);
  arena    M_ARENA_MAX=1 only.
(Transparent huge pages go through GLIBC_TUNABLES=glibc.malloc.hugetlb=1 in the
environment, recorded in the output.)
"""
import argparse
import ctypes
import json
import os
import resource
import sys
import time

_P = argparse.ArgumentParser()
_P.add_argument("--alloc", choices=("default", "tuned", "mmap", "arena"), required=True)
_P.add_argument("--config", choices=("demo", "original"), required=True)
_P.add_argument("--repeats", type=int, default=5)
_P.add_argument("--late", action="store_true",
                help="set the allocator after jax, torch and the step are built (not before imports)")
ARGS = _P.parse_args()

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_SETTINGS = {"default": (), "tuned": ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_ARENA_MAX, 1)),
             "mmap": ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)), "arena": ((_M_ARENA_MAX, 1),)}
_libc = ctypes.CDLL("libc.so.6")


def _tune():
  for _opt, _val in _SETTINGS[ARGS.alloc]:
    assert _libc.mallopt(_opt, _val) == 1, (_opt, _val)


if not ARGS.late:
  _tune()

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

sys.path.insert(0, ".")
from bench.bench_step import preset_config, random_batch, train_step  # pylint: disable=g-import-not-at-top
from bench.bench_original import ours_config  # pylint: disable=g-import-not-at-top
from neurocodec_jax.run import build_run  # pylint: disable=g-import-not-at-top

config = ours_config(1.0) if ARGS.config == "original" else preset_config("demo", None, True, True)
batch = {k: jnp.asarray(v) for k, v in random_batch(config).items()}
run = build_run(config, example=batch)
_, step, compile_s, temp_mb = train_step(config, run, run.init_state(), batch)
if ARGS.late:
  _tune()
step(); step()
times, faults = [], []
for _ in range(ARGS.repeats):
  f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  t0 = time.perf_counter()
  step()
  times.append(time.perf_counter() - t0)
  faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) * 4096 / 2 ** 20)
print(json.dumps({"alloc": ARGS.alloc, "config": ARGS.config,
                  "late": ARGS.late, "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
                  "median_ms": round(1e3 * float(np.median(times))),
                  "times_ms": [round(1e3 * t) for t in times],
                  "faults_mb": round(float(np.median(faults))), "temp_mb": round(temp_mb),
                  "loadavg_start": open("/proc/loadavg").read().split()[0],
                  "date": time.strftime("%Y-%m-%d %H:%M:%S")}), flush=True)
