#!/bin/sh
# bench_original's full step with the channel-last MRD: a second kept-heap run and a
# glibc-as-shipped row (ABAB), each its own process (last session's runner, here).
#   nohup sh experiments/bench_2026-11-30e/run_original.sh > /tmp/original.log 2>&1 &
cd "$(dirname "$0")/../.."
OUT=experiments/bench_2026-11-30e ALONE=0 exec sh experiments/bench_2026-11-30d/run_original.sh
