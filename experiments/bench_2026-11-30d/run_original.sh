#!/bin/sh
# bench_original's full step (DAC's discriminator), both allocators, twice (ABAB), and
# the original's step alone in its process under each allocator.
#   nohup sh experiments/bench_2026-11-30d/run_original.sh > /tmp/original.log 2>&1 &
# OUT=<dir> writes the JSONs there instead; ALONE=0 skips the original-alone runs
# (session 32 reran the ABAB rounds this way: experiments/bench_2026-11-30e/run_original.sh).
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
D=${OUT:-experiments/bench_2026-11-30d}
while pgrep -f run_round2.sh > /dev/null; do sleep 10; done
for round in 1 2; do
  for m in keep glibc; do
    $PY -m bench.bench_original --original /tmp/NeuroCodec --widths 1 --no_latent --repeats 3 --malloc $m
    cp bench/results/original_step.json $D/original_step_full_${m}_$round.json
  done
done
[ "${ALONE:-1}" = 0 ] && exit 0
for m in keep glibc; do
  $PY -m bench.bench_original --original /tmp/NeuroCodec --widths 1 --no_latent --repeats 3 --malloc $m --sides original
  cp bench/results/original_step.json $D/original_step_full_${m}_alone.json
done
