#!/bin/sh
# bench_original's full step with the channel-last MRD: a second kept-heap run and a
# glibc-as-shipped row (ABAB), each its own process.
#   nohup sh experiments/bench_2026-11-30e/run_original.sh > /tmp/original.log 2>&1 &
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
D=experiments/bench_2026-11-30e
for round in 1 2; do
  for m in keep glibc; do
    $PY -m bench.bench_original --original /tmp/NeuroCodec --widths 1 --no_latent --repeats 3 --malloc $m
    cp bench/results/original_step.json $D/original_step_full_${m}_$round.json
  done
done
