"""Our whole train step (the demo's generator, DAC's full discriminator; codec
backend jax, so the step is one XLA program) as training compiles it
(``train.loop.compiled_train_step``: batch sharded over the run's mesh), on 1 or 2
forced CPU devices of this 2-core machine. Same global batch (8) and the same
math: XLA partitions one program across the devices (each runs half the batch; the
gradients are all-reduced). Time per step after two warm-ups; one JSON line.

  python experiments/bench_2026-11-30d/step_devices.py --devices {1,2} [--alloc mmap]
"""
import argparse
import ctypes
import json
import os
import sys
import time

_P = argparse.ArgumentParser()
_P.add_argument("--devices", type=int, default=1)
_P.add_argument("--alloc", choices=("default", "mmap"), default="default")
_P.add_argument("--repeats", type=int, default=5)
_P.add_argument("--config", choices=("demo", "original"), default="original")
ARGS = _P.parse_args()
if ARGS.alloc == "mmap":
  _libc = ctypes.CDLL("libc.so.6")
  for _opt, _val in ((-4, 0), (-1, -1)):  # M_MMAP_MAX, M_TRIM_THRESHOLD
    assert _libc.mallopt(_opt, _val) == 1
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + f" --xla_force_host_platform_device_count={ARGS.devices}")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

sys.path.insert(0, ".")
from bench.bench_original import ours_config  # pylint: disable=g-import-not-at-top
from bench.bench_step import preset_config, random_batch  # pylint: disable=g-import-not-at-top
from neurocodec_jax.run import build_run, shard_batch  # pylint: disable=g-import-not-at-top
from neurocodec_jax.train.loop import compiled_train_step  # pylint: disable=g-import-not-at-top

config = ours_config(1.0) if ARGS.config == "original" else preset_config("demo", None, True, True)
config.codec.backend = "jax"
host = random_batch(config)
run = build_run(config, example={k: v[:1] for k, v in host.items()})
assert run.mesh.devices.size == ARGS.devices, run.mesh
step_fn = compiled_train_step(run, max(config.train.max_steps, 1))
batch = shard_batch(host, run.batched)
state = run.init_state()
t0 = time.perf_counter()
state, m = step_fn(state, batch, 0)
jax.block_until_ready(m)
first_s = time.perf_counter() - t0
state, m = step_fn(state, batch, 1)
jax.block_until_ready(m)
times = []
for i in range(ARGS.repeats):
  t0 = time.perf_counter()
  state, m = step_fn(state, batch, 2 + i)
  jax.block_until_ready(m)
  times.append(time.perf_counter() - t0)
m = jax.device_get(m)
print(json.dumps({"devices": ARGS.devices, "alloc": ARGS.alloc, "config": ARGS.config,
                  "median_ms": round(1e3 * float(np.median(times))),
                  "times_ms": [round(1e3 * t) for t in times], "first_step_s": round(first_s, 1),
                  "loss_keys": sorted(k for k in m if "loss" in k)[:6],
                  "date": time.strftime("%Y-%m-%d %H:%M:%S")}), flush=True)
