"""Streaming extraction per block size beside offline extraction, in one process.

The demo preset's generator (random initialization: timing needs no trained
weights, the programs are the same) with a random-weight demo-size DAC in JAX
(``codec.backend=jax``), streamed layer by layer (``streaming.Streamer``,
``stateful``). Per block: the algorithmic latency, the real-time factor (wall
seconds of the blocks / audio seconds, compile excluded) and the CPU real-time
factor (the process's CPU seconds / audio seconds: what the blocks cost one core,
whatever the thread count). The offline row is ``extraction.extract`` on the same
input (whole windows, trial-wide selection). The issue's target, RTF <= 0.5 on one
core at 20-40 ms, is read at one thread:

  OMP_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false" \
      python -m bench.bench_stream

A trained run: ``scripts/stream_bench.py`` (quality against offline as well).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import codec_bridge  # pylint: disable=unused-import  (the runs' codec loader)
from bench.common import report


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--seconds", type=float, default=10.0)
  p.add_argument("--blocks", default="20,40,80", help="block sizes in ms")
  args = p.parse_args(argv)

  from neurocodec_jax import extraction, streaming  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.configs import neurocodec  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.run import build_run  # pylint: disable=g-import-not-at-top

  config = neurocodec.get_config("demo")
  config.codec.random, config.codec.backend = True, "jax"
  sr, rate = config.codec.arch.sample_rate, config.data.eeg_rate
  rng = np.random.default_rng(0)
  mix = (0.1 * rng.standard_normal(int(args.seconds * sr))).astype(np.float32)
  eeg = rng.standard_normal((config.eeg_channels, int(np.ceil(args.seconds * rate)) + 1)
                            ).astype(np.float32)
  run = build_run(config)
  run.example = {k: v[:1] for k, v in extraction.make_window_batch(run, mix, eeg, [0]).items()}
  state = run.init_state()
  with open("/proc/loadavg") as f:
    load = " ".join(f.read().split()[:3])

  extraction.extract(run, state, mix[:sr], eeg[:, :rate])        # compile
  t0, c0 = time.perf_counter(), time.process_time()
  extraction.extract(run, state, mix, eeg)
  rows = [dict(mode="offline", block_ms=None, latency_ms=None,
               rtf=(time.perf_counter() - t0) / args.seconds,
               cpu_rtf=(time.process_time() - c0) / args.seconds)]
  for block_ms in (float(b) for b in args.blocks.split(",")):
    streamer = streaming.Streamer.from_run(run, state, block_ms=block_ms,
                                           max_seconds=args.seconds + 1)
    out = streamer.run(mix, eeg)
    rows.append(dict(mode="stream", block_ms=block_ms,
                     latency_ms=out["latency"]["total"], rtf=out["rtf"],
                     cpu_rtf=out["cpu_rtf"]))
  report("stream", ["mode", "block_ms", "latency_ms", "rtf", "cpu_rtf"], rows,
         notes=f"demo preset, random weights, JAX codec streamed layer by layer; "
               f"{args.seconds:g} s input; loadavg at start {load}")
  return rows


if __name__ == "__main__":
  main()
