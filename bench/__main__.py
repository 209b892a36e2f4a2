"""``python -m bench`` (``make bench``): every benchmark, each printing its table
and writing ``bench/results/<name>.json``."""

from bench import (bench_decode, bench_disc, bench_machine, bench_mamba, bench_pipeline,
                   bench_scan, bench_step, bench_stream)

if __name__ == "__main__":
  bench_machine.main()
  bench_scan.main([])
  bench_mamba.main([])
  bench_decode.main([])
  bench_disc.main([])
  bench_step.main([])
  bench_pipeline.main([])
  bench_stream.main([])
